"""A change that takes away access is in force for the very next request, on every process.

Web processes cache keys, access keys, identity policies and grants
(``kmsweb.ttlcache``); the generations (``kmsweb.generations``) make
each request see every change answered before it started. Two kinds of test:

- two independent gunicorn servers on the test's PostgreSQL database, their
  caches warmed, a change made through one (or by a third process), and
  the next request to each refused; the servers cache for a minute, so
  nothing here passes because an entry expired;
- on the embedded default (any database), the live server's caches are
  put back as they were before the change, as another process's would
  still be, and the next request is refused all the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from keys.selectors import KEY_CACHE
from kmsweb.lib.caller import Caller
from policies.authorization import GRANT_CACHE, IDENTITY_POLICY_CACHE
from policies.models import AccessKey
from policies.services import access_key_set_status
from policies.services.principals import ACCESS_KEY_CACHE
from tests.conftest import REGION, Persona
from tests.gunicorn_nodes import gunicorn_nodes

DATA = b"attack at dawn"
CACHES = (KEY_CACHE, ACCESS_KEY_CACHE, IDENTITY_POLICY_CACHE, GRANT_CACHE)


def client(url: str, persona: Persona) -> Any:
    return boto3.client(
        "kms",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=persona.access_key_id,
        aws_secret_access_key=persona.secret,
        # The first call may wait for a gunicorn worker to finish booting.
        config=Config(retries={"total_max_attempts": 1}, read_timeout=60),
    )


def error_code(call: Callable[..., Any], **params: Any) -> str:
    """The AWS error code ``call`` fails with (the test fails if it succeeds)."""
    with pytest.raises(ClientError) as excinfo:
        call(**params)
    return str(excinfo.value.response["Error"]["Code"])


def deactivate(persona: Persona) -> None:
    """Make ``persona``'s access key inactive through the service (as the dashboard does)."""
    access_key_set_status(
        caller=Caller.system("tests", account_id=persona.account_id),
        access_key=AccessKey.objects.get(pk=persona.access_key_id),
        active=False,
    )


# --- Two gunicorn servers on PostgreSQL ----------------------------------------------------------


@pytest.fixture
def two_servers(transactional_db: None, tmp_path: Path) -> Iterator[list[str]]:
    """Two gunicorn servers (one worker each: two processes with their own caches) on the test database."""
    # A minute: only the generations can make a change apply sooner.
    with gunicorn_nodes(2, {"KMSWEB_AUTH_CACHE_SECONDS": "60"}, tmp_path) as urls:
        yield urls


@pytest.mark.postgres
def test_it_refuses_a_revoked_grant_and_its_token_on_every_process_at_once(
    two_servers: list[str], key_admin: Persona, make_persona: Callable[..., Persona]
) -> None:
    app = make_persona("app", policy=None)
    admins = [client(url, key_admin) for url in two_servers]
    apps = [client(url, app) for url in two_servers]
    key_id = admins[0].create_key()["KeyMetadata"]["KeyId"]
    made = admins[0].create_grant(KeyId=key_id, GranteePrincipal=app.principal.arn, Operations=["Encrypt"])
    for kms in apps:  # every process has the grant cached
        for _ in range(3):
            kms.encrypt(KeyId=key_id, Plaintext=DATA, GrantTokens=[made["GrantToken"]])
    admins[0].revoke_grant(KeyId=key_id, GrantId=made["GrantId"])
    for kms in reversed(apps):
        code = error_code(kms.encrypt, KeyId=key_id, Plaintext=DATA, GrantTokens=[made["GrantToken"]])
        assert code == "AccessDeniedException"
        assert error_code(kms.encrypt, KeyId=key_id, Plaintext=DATA) == "AccessDeniedException"


@pytest.mark.postgres
def test_it_refuses_a_disabled_key_and_a_key_pending_deletion_on_every_process_at_once(
    two_servers: list[str], key_admin: Persona
) -> None:
    admins = [client(url, key_admin) for url in two_servers]
    key_id = admins[0].create_key()["KeyMetadata"]["KeyId"]
    for kms in admins:
        blob = kms.encrypt(KeyId=key_id, Plaintext=DATA)["CiphertextBlob"]
        kms.decrypt(CiphertextBlob=blob)
    admins[0].disable_key(KeyId=key_id)
    for kms in reversed(admins):
        assert error_code(kms.encrypt, KeyId=key_id, Plaintext=DATA) == "DisabledException"
        assert error_code(kms.decrypt, CiphertextBlob=blob) == "DisabledException"

    admins[1].enable_key(KeyId=key_id)
    for kms in admins:
        kms.encrypt(KeyId=key_id, Plaintext=DATA)
    admins[1].schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    for kms in admins:
        assert error_code(kms.encrypt, KeyId=key_id, Plaintext=DATA) == "KMSInvalidStateException"
        assert error_code(kms.decrypt, CiphertextBlob=blob) == "KMSInvalidStateException"


@pytest.mark.postgres
def test_it_refuses_an_inactive_access_key_on_every_process_at_once(
    two_servers: list[str], key_admin: Persona, make_persona: Callable[..., Persona]
) -> None:
    user = make_persona("worker", policy=None)
    admins = [client(url, key_admin) for url in two_servers]
    users = [client(url, user) for url in two_servers]
    key_id = admins[0].create_key()["KeyMetadata"]["KeyId"]
    admins[0].create_grant(KeyId=key_id, GranteePrincipal=user.principal.arn, Operations=["Encrypt"])
    for kms in users:
        kms.encrypt(KeyId=key_id, Plaintext=DATA)
    deactivate(user)  # by a third process: the test's own
    for kms in users:
        assert error_code(kms.encrypt, KeyId=key_id, Plaintext=DATA) == "UnrecognizedClientException"


# --- One process, its caches as another process's would be --------------------------------------


@contextmanager
def caches_left_as_they_were() -> Iterator[None]:
    """Put back, after the change, what the live server's caches held before it.

    A service drops the caches of the process that makes the change; another
    process's still hold the entries loaded before it.
    """
    held = [dict(cache._data) for cache in CACHES]
    yield
    for cache, entries in zip(CACHES, held, strict=True):
        cache._data.update(entries)


def test_it_refuses_the_next_request_after_a_change_whatever_the_cache_holds(
    kms_client: Callable[..., Any], key_admin: Persona, make_persona: Callable[..., Persona]
) -> None:
    app = make_persona("app", policy=None)
    admin, as_app = kms_client(key_admin), kms_client(app)
    key_id = admin.create_key()["KeyMetadata"]["KeyId"]
    made = admin.create_grant(KeyId=key_id, GranteePrincipal=app.principal.arn, Operations=["Encrypt"])
    as_app.encrypt(KeyId=key_id, Plaintext=DATA, GrantTokens=[made["GrantToken"]])
    with caches_left_as_they_were():
        admin.revoke_grant(KeyId=key_id, GrantId=made["GrantId"])
    assert GRANT_CACHE._data  # the revoked grant is still in the cache…
    for _ in range(2):  # …and never used again
        code = error_code(as_app.encrypt, KeyId=key_id, Plaintext=DATA, GrantTokens=[made["GrantToken"]])
        assert code == "AccessDeniedException"

    admin.encrypt(KeyId=key_id, Plaintext=DATA)
    with caches_left_as_they_were():
        admin.disable_key(KeyId=key_id)
    assert error_code(admin.encrypt, KeyId=key_id, Plaintext=DATA) == "DisabledException"

    admin.enable_key(KeyId=key_id)
    admin.encrypt(KeyId=key_id, Plaintext=DATA)
    with caches_left_as_they_were():
        admin.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    assert error_code(admin.encrypt, KeyId=key_id, Plaintext=DATA) == "KMSInvalidStateException"

    admin.list_keys()
    with caches_left_as_they_were():
        deactivate(key_admin)
    assert error_code(admin.list_keys) == "UnrecognizedClientException"


@pytest.mark.postgres
def test_a_call_on_assumed_generations_after_a_revocation_is_served_again_and_audited_once(
    kms_client: Callable[..., Any], key_admin: Persona, make_persona: Callable[..., Persona]
) -> None:
    """A read-only call on PostgreSQL assumes the generations this process saw last (no read).

    After a revocation whose bump this process has not read, the next
    Encrypt assumes the old generations and finds the revoked grant in the
    cache; its event's statement sees the bump, writes nothing, and the
    call is served again on the generations read: refused, with one event,
    the refusal.
    """
    from audit.models import AuditEvent
    from kmsweb import metrics

    app = make_persona("app", policy=None)
    admin, as_app = kms_client(key_admin), kms_client(app)
    key_id = admin.create_key()["KeyMetadata"]["KeyId"]
    made = admin.create_grant(KeyId=key_id, GranteePrincipal=app.principal.arn, Operations=["Encrypt"])
    as_app.encrypt(KeyId=key_id, Plaintext=DATA, GrantTokens=[made["GrantToken"]])
    as_app.encrypt(KeyId=key_id, Plaintext=DATA)  # assumed generations, the grant cached
    with caches_left_as_they_were():
        admin.revoke_grant(KeyId=key_id, GrantId=made["GrantId"])
    retries = metrics.GENERATION_RETRIES._value.get()
    last_event = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()

    assert error_code(as_app.encrypt, KeyId=key_id, Plaintext=DATA) == "AccessDeniedException"

    assert metrics.GENERATION_RETRIES._value.get() == retries + 1
    events = list(AuditEvent.objects.filter(id__gt=last_event).values_list("event_name", "error_code"))
    assert events == [("Encrypt", "AccessDeniedException")]
    # The call after it reads nothing again: it assumes the generations its predecessor read.
    assert error_code(as_app.encrypt, KeyId=key_id, Plaintext=DATA) == "AccessDeniedException"
    assert metrics.GENERATION_RETRIES._value.get() == retries + 1
