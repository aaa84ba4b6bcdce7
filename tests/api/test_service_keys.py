"""Service managed ("AWS managed") keys over the wire, with boto3.

A registered service principal (``backup``) signs requests on a user's
behalf with the signed ``X-Kmsweb-On-Behalf-Of`` header; kmsweb evaluates
them as that user with ``kms:ViaService``. The key behind
``alias/aws/backup`` is made on first use, with AWS's fixed policy.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from botocore.exceptions import ClientError
from django.conf import settings
from django.db import connection
from django.utils import timezone

from audit.models import AuditEvent
from keys.models import Alias, Key, KeyManager, KeyState, Tag
from keys.services import service_keys
from keys.services.jobs import keys_rotate_due
from keys.services.service_keys import service_key_get_or_create, service_key_policy
from kmsweb.lib.caller import Caller
from policies.models import Grant, Principal, PrincipalType
from policies.services import access_key_create, service_delegation_create
from tests.conftest import REGION, Persona

HEADER = "X-Kmsweb-On-Behalf-Of"
ALIAS = "alias/aws/backup"
VIA = f"backup.{REGION}.amazonaws.com"


def _service_persona(name: str = "backup", account_id: str | None = None) -> Persona:
    principal = Principal.objects.create(
        account_id=account_id or settings.KMSWEB_ACCOUNT_ID, name=name, type=PrincipalType.SERVICE
    )
    key, secret = access_key_create(caller=Caller.system("tests"), principal=principal)
    return Persona(principal=principal, access_key_id=key.access_key_id, secret=secret)


@pytest.fixture
def backup(key_admin: Persona) -> Persona:
    """The registered service principal ``backup`` (its account exists through key_admin)."""
    return _service_persona()


@pytest.fixture
def alice(make_persona: Callable[..., Persona]) -> Persona:
    """A user without any identity policy: only the service key's policy lets her in."""
    return make_persona("alice", policy=None)


def _acting_for(client: Any, arn: str, *, signed: bool = True) -> Any:
    def add_header(request: Any, **_: Any) -> None:
        request.headers[HEADER] = arn

    # before-sign: SigV4 then signs the header; before-send: it travels unsigned.
    client.meta.events.register("before-sign.kms.*" if signed else "before-send.kms.*", add_header)
    return client


@pytest.fixture
def via_backup(kms_client: Callable[..., Any], backup: Persona, alice: Persona) -> Any:
    """backup's client, acting for alice, who delegated to backup."""
    service_delegation_create(caller=alice.caller(), principal=alice.principal, service=backup.principal)
    return _acting_for(kms_client(backup), alice.principal.arn)


def _code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


def _service_key() -> Key:
    return Key.objects.get(aliases__name=ALIAS)


# -- creation on first use ------------------------------------------------------------------


def test_it_creates_the_service_key_on_first_use_through_the_service(via_backup: Any, alice: Persona) -> None:
    assert not Key.objects.filter(manager=KeyManager.AWS).exists()

    data_key = via_backup.generate_data_key(KeyId=ALIAS, KeySpec="AES_256")

    key = _service_key()
    assert data_key["KeyId"] == key.arn
    assert key.manager == KeyManager.AWS and key.state == KeyState.ENABLED and key.purpose == "backup"
    assert json.loads(key.policy) == json.loads(
        service_key_policy(account_id=key.account_id, region=REGION, service="backup")
    )
    meta = via_backup.describe_key(KeyId=ALIAS)["KeyMetadata"]
    assert meta["KeyManager"] == "AWS" and meta["KeyId"] == str(key.id)
    assert key.rotation_enabled and key.rotation_period_days == 365
    assert key.next_rotation_at is not None
    assert abs(key.next_rotation_at - (key.created_at + timedelta(days=365))) < timedelta(seconds=1)
    plain = via_backup.decrypt(CiphertextBlob=data_key["CiphertextBlob"])["Plaintext"]
    assert plain == data_key["Plaintext"]
    # A second use finds the same key.
    via_backup.encrypt(KeyId=ALIAS, Plaintext=b"again")
    assert Key.objects.filter(manager=KeyManager.AWS).count() == 1
    created = AuditEvent.objects.get(event_name="CreateKey", key_id=str(key.id))
    assert created.user_identity["invokedBy"] == "kmsweb" and created.origin == "system"
    assert created.recipient_account_id == key.account_id
    assert created.request_parameters == {"service": "backup", "triggeredBy": alice.principal.arn}
    assert AuditEvent.objects.filter(event_name="CreateAlias", key_id=str(key.id), error_code="").count() == 1


def test_it_records_the_user_and_the_service_in_the_audit_identity(
    via_backup: Any, alice: Persona, backup: Persona
) -> None:
    via_backup.encrypt(KeyId=ALIAS, Plaintext=b"x")
    event = AuditEvent.objects.get(event_name="Encrypt")
    assert event.principal_arn == alice.principal.arn
    identity = event.user_identity
    assert identity["arn"] == alice.principal.arn and identity["userName"] == "alice"
    assert identity["invokedBy"] == "backup.amazonaws.com"
    assert identity["invokedByArn"] == backup.principal.arn
    assert identity["accessKeyId"] == backup.access_key_id


def test_it_creates_the_service_key_on_describe_key_by_a_user_of_the_account(kms: Any, backup: Persona) -> None:
    # AWS services create their keys with DescribeKey; the account may read metadata directly.
    meta = kms.describe_key(KeyId=f"arn:aws:kms:{REGION}:{settings.KMSWEB_ACCOUNT_ID}:{ALIAS}")["KeyMetadata"]
    assert meta["KeyManager"] == "AWS"
    assert meta["Arn"] == _service_key().arn
    aliases = {a["AliasName"]: a.get("TargetKeyId") for a in kms.list_aliases()["Aliases"]}
    assert aliases[ALIAS] == meta["KeyId"]
    status = kms.get_key_rotation_status(KeyId=meta["KeyId"])
    assert status["KeyRotationEnabled"] is True and status["RotationPeriodInDays"] == 365


def test_it_answers_not_found_for_an_unregistered_service(kms: Any, backup: Persona) -> None:
    with pytest.raises(ClientError) as exc:
        kms.encrypt(KeyId="alias/aws/payroll", Plaintext=b"x")
    assert _code(exc) == "NotFoundException"
    with pytest.raises(ClientError) as exc:
        kms.describe_key(KeyId="alias/aws/payroll")
    assert _code(exc) == "NotFoundException"
    assert not Key.objects.filter(manager=KeyManager.AWS).exists()
    assert not Alias.objects.filter(name="alias/aws/payroll").exists()


def test_it_does_not_create_another_accounts_service_key(
    kms_client: Callable[..., Any], outsider: Persona, backup: Persona
) -> None:
    # backup is registered in the default account, not in the outsider's.
    with pytest.raises(ClientError) as exc:
        kms_client(outsider).describe_key(KeyId=ALIAS)
    assert _code(exc) == "NotFoundException"
    with pytest.raises(ClientError) as exc:
        kms_client(outsider).describe_key(KeyId=f"arn:aws:kms:{REGION}:{backup.account_id}:{ALIAS}")
    assert _code(exc) == "NotFoundException"
    assert not Key.objects.filter(manager=KeyManager.AWS).exists()


# -- kms:ViaService -------------------------------------------------------------------------


def test_it_allows_use_through_the_service_and_denies_it_directly(
    via_backup: Any, kms: Any, kms_client: Callable[..., Any], alice: Persona
) -> None:
    blob = via_backup.encrypt(KeyId=ALIAS, Plaintext=b"through backup")["CiphertextBlob"]
    key = _service_key()
    for client in (kms, kms_client(alice)):
        with pytest.raises(ClientError) as exc:
            client.encrypt(KeyId=ALIAS, Plaintext=b"direct")
        assert _code(exc) == "AccessDeniedException"
        with pytest.raises(ClientError) as exc:
            client.decrypt(CiphertextBlob=blob)
        assert _code(exc) == "AccessDeniedException"
        with pytest.raises(ClientError) as exc:
            client.generate_data_key(KeyId=str(key.id), KeySpec="AES_256")
        assert _code(exc) == "AccessDeniedException"
    denied = AuditEvent.objects.filter(key_id=str(key.id), error_code="AccessDeniedException")
    assert denied.count() == 6
    assert via_backup.decrypt(CiphertextBlob=blob)["Plaintext"] == b"through backup"


def test_it_lets_the_service_create_grants_on_its_key_but_nobody_directly(
    via_backup: Any, kms: Any, alice: Persona
) -> None:
    via_backup.describe_key(KeyId=ALIAS)
    key = _service_key()
    grant = via_backup.create_grant(KeyId=str(key.id), GranteePrincipal=alice.principal.arn, Operations=["Decrypt"])
    assert Grant.objects.filter(grant_id=grant["GrantId"], key=key).exists()
    with pytest.raises(ClientError) as exc:
        kms.create_grant(KeyId=str(key.id), GranteePrincipal=alice.principal.arn, Operations=["Decrypt"])
    assert _code(exc) == "AccessDeniedException"
    assert Grant.objects.filter(key=key).count() == 1


def test_it_refuses_the_header_from_a_principal_that_is_not_a_service(
    kms_client: Callable[..., Any], key_admin: Persona, alice: Persona
) -> None:
    client = _acting_for(kms_client(key_admin), alice.principal.arn)
    with pytest.raises(ClientError) as exc:
        client.list_keys()
    assert _code(exc) == "AccessDeniedException"
    event = AuditEvent.objects.get(event_name="ListKeys")
    assert event.error_code == "AccessDeniedException"


def test_it_refuses_an_unsigned_header(kms_client: Callable[..., Any], backup: Persona, alice: Persona) -> None:
    client = _acting_for(kms_client(backup), alice.principal.arn, signed=False)
    with pytest.raises(ClientError) as exc:
        client.list_keys()
    assert _code(exc) == "InvalidSignatureException"
    assert "X-Kmsweb-On-Behalf-Of" in exc.value.response["Error"]["Message"]
    assert AuditEvent.objects.get(event_name="ListKeys").error_code == "InvalidSignatureException"


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws:iam::{account}:user/nobody",
        "arn:aws:iam::444455556666:user/outsider",
        "arn:aws:iam::{account}:service/backup",
        "arn:aws:iam::{account}:root",
        "not an arn",
    ],
)
def test_it_refuses_to_act_for_a_principal_outside_the_account_or_missing(
    kms_client: Callable[..., Any], backup: Persona, outsider: Persona, arn: str
) -> None:
    client = _acting_for(kms_client(backup), arn.format(account=backup.account_id))
    with pytest.raises(ClientError) as exc:
        client.encrypt(KeyId=ALIAS, Plaintext=b"x")
    assert _code(exc) == "AccessDeniedException"
    assert not Key.objects.filter(manager=KeyManager.AWS).exists()
    assert AuditEvent.objects.get(event_name="Encrypt").error_code == "AccessDeniedException"


# -- refusals on the service key ------------------------------------------------------------


def _refusals(key: Key, other: Key, alice_arn: str) -> list[tuple[str, dict[str, Any]]]:
    kid = str(key.id)
    return [
        ("put_key_policy", {"KeyId": kid, "PolicyName": "default", "Policy": key.policy}),
        ("disable_key", {"KeyId": kid}),
        ("enable_key", {"KeyId": kid}),
        ("schedule_key_deletion", {"KeyId": kid, "PendingWindowInDays": 7}),
        ("cancel_key_deletion", {"KeyId": kid}),
        ("disable_key_rotation", {"KeyId": kid}),
        ("enable_key_rotation", {"KeyId": kid}),
        ("rotate_key_on_demand", {"KeyId": kid}),
        ("update_key_description", {"KeyId": kid, "Description": "mine now"}),
        ("create_alias", {"AliasName": "alias/steal-backup", "TargetKeyId": kid}),
        ("update_alias", {"AliasName": "alias/customer", "TargetKeyId": kid}),
        ("tag_resource", {"KeyId": kid, "Tags": [{"TagKey": "team", "TagValue": "x"}]}),
        ("untag_resource", {"KeyId": kid, "TagKeys": ["team"]}),
        ("create_grant", {"KeyId": kid, "GranteePrincipal": alice_arn, "Operations": ["Encrypt"]}),
    ]


def _snapshot(key: Key) -> tuple[Any, ...]:
    key.refresh_from_db()
    return (
        key.state,
        key.policy,
        key.description,
        key.rotation_enabled,
        key.next_rotation_at,
        key.current_material_id,
        sorted(Alias.objects.filter(key=key).values_list("name", flat=True)),
        Tag.objects.filter(key=key).count(),
        Grant.objects.filter(key=key).count(),
    )


@pytest.mark.parametrize("who", ["key_admin", "via_service"])
def test_it_refuses_every_change_to_the_service_key_and_changes_nothing(
    kms: Any, via_backup: Any, alice: Persona, make_key: Callable[..., Key], who: str
) -> None:
    via_backup.describe_key(KeyId=ALIAS)
    key = _service_key()
    other = make_key(alias="alias/customer")
    client = kms if who == "key_admin" else via_backup
    before = _snapshot(key)
    for operation, params in _refusals(key, other, alice.principal.arn):
        if who == "via_service" and operation == "create_grant":
            continue  # the service itself may grant (tested above)
        with pytest.raises(ClientError) as exc:
            getattr(client, operation)(**params)
        assert _code(exc) == "AccessDeniedException", operation
        assert _snapshot(key) == before, operation
    assert Alias.objects.get(name="alias/customer").key_id == other.id
    names = {
        "put_key_policy": "PutKeyPolicy",
        "schedule_key_deletion": "ScheduleKeyDeletion",
        "tag_resource": "TagResource",
        "disable_key": "DisableKey",
    }
    for event_name in names.values():
        event = AuditEvent.objects.filter(event_name=event_name, key_id=str(key.id)).get()
        assert event.error_code == "AccessDeniedException"


def test_it_refuses_to_delete_or_create_a_reserved_alias(
    kms: Any, via_backup: Any, make_key: Callable[..., Key]
) -> None:
    via_backup.describe_key(KeyId=ALIAS)
    key = _service_key()
    other = make_key()
    with pytest.raises(ClientError) as exc:
        kms.delete_alias(AliasName=ALIAS)
    assert _code(exc) == "InvalidAliasNameException"
    with pytest.raises(ClientError) as exc:
        kms.create_alias(AliasName="alias/aws/payroll", TargetKeyId=str(other.id))
    assert _code(exc) == "InvalidAliasNameException"
    with pytest.raises(ClientError) as exc:
        kms.update_alias(AliasName=ALIAS, TargetKeyId=str(other.id))
    assert _code(exc) == "InvalidAliasNameException"
    assert Alias.objects.get(name=ALIAS).key_id == key.id
    assert AuditEvent.objects.get(event_name="DeleteAlias").error_code == "InvalidAliasNameException"


def test_it_rotates_the_service_key_yearly_with_the_rotation_job(via_backup: Any) -> None:
    via_backup.describe_key(KeyId=ALIAS)
    key = _service_key()
    system = Caller.system("rotate_keys")
    assert keys_rotate_due(caller=system, now=timezone.now() + timedelta(days=364))["rotated"] == 0
    later = timezone.now() + timedelta(days=366)
    with time_machine.travel(later, tick=False):
        keys_rotate_due(caller=system, now=later)
    assert AuditEvent.objects.filter(event_name="RotateKey", key_id=str(key.id), error_code="").count() == 1
    key.refresh_from_db()
    assert key.current_material is not None and key.current_material.version == 2
    assert key.next_rotation_at == later + timedelta(days=365)


# -- two first uses at once (PostgreSQL) ---------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_creates_one_service_key_when_two_first_uses_race(
    key_admin: Persona, alice: Persona, monkeypatch: pytest.MonkeyPatch
) -> None:
    _service_persona()
    original = service_keys._existing
    both_looked = threading.Barrier(2)
    looked: set[str] = set()

    def racing_existing(account_id: str, region: str, name: str) -> Key | None:
        found = original(account_id, region, name)
        thread = threading.current_thread().name
        if thread not in looked:
            # Both requests see no key before either inserts one.
            looked.add(thread)
            both_looked.wait(10)
        return found

    monkeypatch.setattr(service_keys, "_existing", racing_existing)
    results: dict[str, Any] = {}

    def worker(name: str) -> None:
        try:
            caller = alice.caller(via_service=VIA)
            results[name] = service_key_get_or_create(caller=caller, alias_name=ALIAS)
        except Exception as exc:  # surfaced by the assertions below
            results[name] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(n,), name=n) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(t.is_alive() for t in threads)
    assert all(isinstance(r, Key) for r in results.values()), results
    assert results["a"].id == results["b"].id
    assert Key.objects.filter(manager=KeyManager.AWS).count() == 1
    assert Alias.objects.filter(name=ALIAS).count() == 1
    created = [
        e for e in AuditEvent.objects.filter(event_name="CreateKey") if (e.request_parameters or {}).get("service")
    ]
    assert [e.key_id for e in created] == [str(results["a"].id)]


def test_it_lists_the_predefined_alias_of_a_registered_service_before_first_use(
    kms: Any, backup: Persona, make_key: Callable[..., Key]
) -> None:
    make_key(alias="alias/a-first")
    make_key(alias="alias/z-last")
    _service_persona("payroll")
    before = kms.list_aliases()["Aliases"]
    assert [a["AliasName"] for a in before] == [
        "alias/a-first",
        "alias/aws/backup",
        "alias/aws/payroll",
        "alias/z-last",
    ]
    predefined = [a for a in before if a["AliasName"].startswith("alias/aws/")]
    assert all("TargetKeyId" not in a for a in predefined)
    assert predefined[0]["AliasArn"] == f"arn:aws:kms:{REGION}:{backup.account_id}:alias/aws/backup"

    kms.describe_key(KeyId=ALIAS)
    paged, marker = [], None
    while True:
        page = kms.list_aliases(Limit=1, **({"Marker": marker} if marker else {}))
        paged += page["Aliases"]
        if not page["Truncated"]:
            break
        marker = page["NextMarker"]
    assert [a["AliasName"] for a in paged] == [a["AliasName"] for a in before]
    by_name = {a["AliasName"]: a for a in paged}
    assert by_name[ALIAS]["TargetKeyId"] == str(_service_key().id)
    assert "TargetKeyId" not in by_name["alias/aws/payroll"]
    assert Key.objects.filter(manager=KeyManager.AWS).count() == 1
