"""The per-process caches of the API's hot path and their generations.

Each ``with request():`` block is one request (``generations_scope``): the
caches serve entries loaded under the generations it read. A row changed
behind the services' back shows that the cache is really in use; a change
made through a service applies to the next request; and a cache still
holding what it held before the change (as another process's would) serves
the next request nothing of it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import connection, transaction

from keys import services as key_services
from keys.selectors import KEY_CACHE, key_get_for
from kmsweb.generations import GRANTS, KEYS, generation_bump, generations_read, generations_scope
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import AccessDenied, Disabled, InvalidState
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
CACHES = (ACCESS_KEY_CACHE, IDENTITY_POLICY_CACHE, GRANT_CACHE, KEY_CACHE)

request = generations_scope


@contextmanager
def as_another_process_sees_it() -> Iterator[None]:
    """Run a change, then put back what the caches held before it.

    A service drops this process's caches as it changes a row; another
    process's caches still hold the old entries, and only the generation
    tells it that they are stale.
    """
    held: list[dict[Any, Any]] = [dict(cache._data) for cache in CACHES]
    yield
    for cache, entries in zip(CACHES, held, strict=True):
        cache._data.update(entries)


def test_it_caches_access_keys_but_a_deactivation_applies_to_the_next_request(key_admin) -> None:
    with request():
        assert access_key_authenticate(access_key_id=key_admin.access_key_id) is not None
    # Behind the services' back: the cache still answers (it is in use)…
    AccessKey.objects.filter(pk=key_admin.access_key_id).update(status="Inactive")
    with request():
        assert access_key_authenticate(access_key_id=key_admin.access_key_id) is not None
    AccessKey.objects.filter(pk=key_admin.access_key_id).update(status="Active")
    # …through the service, the change is seen by the very next request, even
    # by a process whose cache still holds the active key.
    system = Caller.system("tests", account_id=key_admin.account_id)
    with as_another_process_sees_it():
        access_key_set_status(caller=system, access_key=AccessKey.objects.get(pk=key_admin.access_key_id), active=False)
    assert ACCESS_KEY_CACHE._data  # the stale entry is there…
    with request():
        assert access_key_authenticate(access_key_id=key_admin.access_key_id) is None  # …and not used


def test_it_applies_a_new_identity_policy_to_the_next_request(key_admin, make_key) -> None:
    key = make_key()
    caller = key_admin.caller()
    with request():
        authorize(caller=caller, action="kms:Encrypt", key=key)  # cached: allowed
    IdentityPolicy.objects.create(
        account=key_admin.principal.account, name="SneakyDeny", document=DENY_ENCRYPT, principal=key_admin.principal
    )
    with request():
        authorize(caller=caller, action="kms:Encrypt", key=key)  # a raw insert is not seen yet
    IdentityPolicy.objects.filter(name="SneakyDeny").delete()
    with as_another_process_sees_it():
        identity_policy_put(
            caller=Caller.system("tests", account_id=key_admin.account_id),
            account=key_admin.principal.account,
            name="DenyEncrypt",
            document=DENY_ENCRYPT,
            principal=key_admin.principal,
        )
    with request(), pytest.raises(AccessDenied):
        authorize(caller=caller, action="kms:Encrypt", key=key)


def test_it_stops_honouring_a_revoked_grant_in_the_next_request(key_admin, make_key, make_persona) -> None:
    key = make_key()
    app = make_persona("app", policy=None)
    grant, _ = grant_create(
        caller=key_admin.caller(), key=key, grantee_principal=app.principal.arn, operations=["Encrypt"]
    )
    with request():
        assert authorize(caller=app.caller(), action="kms:Encrypt", key=key).reason == "grant"
    with as_another_process_sees_it():
        grant_revoke(caller=key_admin.caller(), key=key, grant_id=grant.grant_id)
    with request(), pytest.raises(AccessDenied):
        authorize(caller=app.caller(), action="kms:Encrypt", key=key)


def test_it_caches_keys_but_a_disable_applies_to_the_next_request(key_admin, make_key) -> None:
    caller = key_admin.caller()
    key = make_key()
    with request():
        looked_up = key_get_for(caller=caller, key_ref=str(key.id))
        assert key_get_for(caller=caller, key_ref=str(key.id)) is looked_up  # served from the cache
    with as_another_process_sees_it():
        key_services.key_disable(caller=caller, key=looked_up)
    with request():
        fresh = key_get_for(caller=caller, key_ref=str(key.id))
        assert fresh is not looked_up
        assert fresh.state == "Disabled"
        with pytest.raises(Disabled):
            key_services.key_encrypt(caller=caller, key=fresh, plaintext=b"x")


def test_it_shows_a_change_to_the_rest_of_the_request_that_made_it(key_admin, make_key) -> None:
    caller = key_admin.caller()
    key = make_key()
    with request():
        looked_up = key_get_for(caller=caller, key_ref=str(key.id))
        key_services.key_disable(caller=caller, key=looked_up)
        assert key_get_for(caller=caller, key_ref=str(key.id)).state == "Disabled"


def test_it_bumps_a_generation_only_when_the_change_commits(key_admin, make_key) -> None:
    key = make_key()
    caller = key_admin.caller()
    before = generations_read()
    key_services.key_disable(caller=caller, key=key)
    key_services.key_schedule_deletion(caller=caller, key=key, pending_window_days=7)
    after = generations_read()
    assert after == {**before, KEYS: before[KEYS] + 2}
    # Refused after the key was locked (and the bump made): both roll back.
    with pytest.raises(InvalidState):
        key_services.key_schedule_deletion(caller=caller, key=key, pending_window_days=7)
    assert generations_read() == after


def test_it_caches_nothing_outside_a_request(key_admin) -> None:
    assert access_key_authenticate(access_key_id=key_admin.access_key_id) is not None
    AccessKey.objects.filter(pk=key_admin.access_key_id).update(status="Inactive")
    assert access_key_authenticate(access_key_id=key_admin.access_key_id) is None
    assert not ACCESS_KEY_CACHE._data


@pytest.mark.postgres
def test_it_reads_the_generations_again_after_its_statement_was_deallocated(transactional_db: None) -> None:
    first = generations_read()  # outside a transaction: prepared
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")  # as psycopg or a pooler may
    assert generations_read() == first
    generation_bump(GRANTS)
    assert generations_read() == {**first, GRANTS: first[GRANTS] + 1}
    with transaction.atomic():  # inside one: sent as text
        generation_bump(KEYS)
        assert generations_read() == {**first, GRANTS: first[GRANTS] + 1, KEYS: first[KEYS] + 1}


def test_concurrent_requests_share_a_read_that_began_after_each_started(transactional_db: None) -> None:
    """One read serves the requests that started before it began; a later request reads again."""
    import threading

    from kmsweb.generations import generation_observed

    start = threading.Barrier(8)
    seen: list[int] = []

    def request_keys() -> None:
        try:
            start.wait()
            with generations_scope():
                seen.append(generation_observed(KEYS) or 0)
        finally:
            connection.close()

    base = generations_read()[KEYS]
    threads = [threading.Thread(target=request_keys) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [base] * 8
    with generations_scope():
        assert generation_observed(KEYS) == base
        generation_bump(KEYS)  # answered before the next request starts
    with generations_scope():
        # The read shared above began before this request: it is not reused.
        assert generation_observed(KEYS) == base + 1
