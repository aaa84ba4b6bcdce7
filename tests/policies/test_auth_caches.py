"""The per-process caches of the API's hot path (KMSWEB_AUTH_CACHE_SECONDS).

The suite runs with the caches off; here they are on, and every change made
through a service must apply at once, while a row changed behind the
services' back shows the cache is really in use.
"""

from __future__ import annotations

import json

import pytest

from keys import services as key_services
from keys.selectors import KEY_CACHE, key_get_for
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import AccessDenied, Disabled
from policies.authorization import GRANT_CACHE, IDENTITY_POLICY_CACHE, authorize
from policies.models import AccessKey, IdentityPolicy
from policies.services import (
    access_key_authenticate,
    access_key_set_status,
    grant_create,
    grant_revoke,
    identity_policy_put,
)
from policies.services.principals import ACCESS_KEY_CACHE

pytestmark = pytest.mark.django_db

DENY_ENCRYPT = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "kms:Encrypt", "Resource": "*"}]}
)


@pytest.fixture(autouse=True)
def caches_on(settings):  # type: ignore[no-untyped-def]
    settings.KMSWEB_AUTH_CACHE_SECONDS = 60
    for cache in (ACCESS_KEY_CACHE, IDENTITY_POLICY_CACHE, GRANT_CACHE, KEY_CACHE):
        cache.invalidate()
    yield
    for cache in (ACCESS_KEY_CACHE, IDENTITY_POLICY_CACHE, GRANT_CACHE, KEY_CACHE):
        cache.invalidate()


def test_it_caches_access_keys_but_a_deactivation_applies_at_once(key_admin) -> None:
    assert access_key_authenticate(access_key_id=key_admin.access_key_id) is not None
    # Behind the services' back: the cache still answers (it is in use)…
    AccessKey.objects.filter(pk=key_admin.access_key_id).update(status="Inactive")
    assert access_key_authenticate(access_key_id=key_admin.access_key_id) is not None
    AccessKey.objects.filter(pk=key_admin.access_key_id).update(status="Active")
    # …through the service, the change is seen by the very next request.
    system = Caller.system("tests", account_id=key_admin.account_id)
    access_key_set_status(caller=system, access_key=AccessKey.objects.get(pk=key_admin.access_key_id), active=False)
    assert access_key_authenticate(access_key_id=key_admin.access_key_id) is None


def test_it_applies_a_new_identity_policy_at_once(key_admin, make_key) -> None:
    key = make_key()
    caller = key_admin.caller()
    authorize(caller=caller, action="kms:Encrypt", key=key)  # cached: allowed
    IdentityPolicy.objects.create(
        account=key_admin.principal.account, name="SneakyDeny", document=DENY_ENCRYPT, principal=key_admin.principal
    )
    authorize(caller=caller, action="kms:Encrypt", key=key)  # a raw insert is not seen yet
    IdentityPolicy.objects.filter(name="SneakyDeny").delete()
    identity_policy_put(
        caller=Caller.system("tests", account_id=key_admin.account_id),
        account=key_admin.principal.account,
        name="DenyEncrypt",
        document=DENY_ENCRYPT,
        principal=key_admin.principal,
    )
    with pytest.raises(AccessDenied):
        authorize(caller=caller, action="kms:Encrypt", key=key)


def test_it_stops_honouring_a_revoked_grant_at_once(key_admin, make_key, make_persona) -> None:
    key = make_key()
    app = make_persona("app", policy=None)
    grant, _ = grant_create(
        caller=key_admin.caller(), key=key, grantee_principal=app.principal.arn, operations=["Encrypt"]
    )
    decision = authorize(caller=app.caller(), action="kms:Encrypt", key=key)
    assert decision.reason == "grant"
    grant_revoke(caller=key_admin.caller(), key=key, grant_id=grant.grant_id)
    with pytest.raises(AccessDenied):
        authorize(caller=app.caller(), action="kms:Encrypt", key=key)


def test_it_caches_keys_but_a_disable_applies_at_once(key_admin, make_key) -> None:
    caller = key_admin.caller()
    key = make_key()
    looked_up = key_get_for(caller=caller, key_ref=str(key.id))
    assert key_get_for(caller=caller, key_ref=str(key.id)) is looked_up  # served from the cache
    key_services.key_disable(caller=caller, key=looked_up)
    fresh = key_get_for(caller=caller, key_ref=str(key.id))
    assert fresh.state == "Disabled"
    with pytest.raises(Disabled):
        key_services.key_encrypt(caller=caller, key=fresh, plaintext=b"x")
