"""Authorization through the AWS API: boto3 against a live kmsweb, several principals in two accounts.

Who may do what is decided by the key policy, the caller's identity policies
and the key's grants, as in AWS KMS. Every refusal is checked the same way
(``refused``/``denied``): the AWS error code, AWS's AccessDeniedException
message (principal, action, resource), exactly one audit event carrying the
decision (reason and deciding statement), and no change to keys, grants,
aliases, tags, policies or access keys.

Account A is KMSWEB_ACCOUNT_ID (111122223333), account B is 444455556666.
The live server sees every client at 127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from django.conf import settings

from audit.models import AuditEvent
from keys.models import Alias, Key, KeyState, Tag
from kmsweb.lib.caller import Caller
from policies.models import AccessKey, Grant, IdentityPolicy, PolicyAttachment
from policies.services import identity_policy_put, policy_attach, policy_detach
from tests.conftest import OTHER_ACCOUNT, REGION, Persona

pytestmark = pytest.mark.django_db(transaction=True)

A = settings.KMSWEB_ACCOUNT_ID
B = OTHER_ACCOUNT
DENIED = "AccessDeniedException"
DATA = b"attack at dawn"
NO_RESOURCE_POLICY = "because no resource-based policy allows the {action} action"
NO_IDENTITY_POLICY = "because no identity-based policy allows the {action} action"
EXPLICIT_IN_KEY_POLICY = "with an explicit deny in a resource-based policy"
EXPLICIT_IN_IDENTITY_POLICY = "with an explicit deny in an identity-based policy"
RETIRE_NOT_NAMED = "because the grant does not let the principal retire it"


# --- policies -------------------------------------------------------------------


def arn(account: str, name: str) -> str:
    return f"arn:aws:iam::{account}:user/{name}"


def root(account: str) -> str:
    return f"arn:aws:iam::{account}:root"


def allow(principal: Any, *actions: str, sid: str | None = None, **condition: Any) -> dict[str, Any]:
    """A key policy Allow statement; ``condition`` is the Condition element's operators."""
    st: dict[str, Any] = {"Effect": "Allow", "Principal": principal, "Action": list(actions), "Resource": "*"}
    if sid:
        st["Sid"] = sid
    if condition:
        st["Condition"] = condition
    return st


def deny(principal: Any, *actions: str, sid: str, **condition: Any) -> dict[str, Any]:
    st = allow(principal, *actions, sid=sid, **condition)
    st["Effect"] = "Deny"
    return st


def key_policy(*statements: dict[str, Any]) -> str:
    """A key policy whose first statement lets key-admin do everything (so it can always manage the key)."""
    admin = allow({"AWS": arn(A, "key-admin")}, "kms:*", sid="KeyAdministrator")
    return json.dumps({"Version": "2012-10-17", "Statement": [admin, *statements]})


def identity(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def may(*actions: str, resource: str = "*", sid: str | None = None, **condition: Any) -> dict[str, Any]:
    """An identity policy Allow statement."""
    st: dict[str, Any] = {"Effect": "Allow", "Action": list(actions), "Resource": resource}
    if sid:
        st["Sid"] = sid
    if condition:
        st["Condition"] = condition
    return st


def give(persona: Persona, name: str, document: str) -> None:
    """Put an inline identity policy on ``persona`` (as kmsweb's own administration would)."""
    principal = persona.principal
    identity_policy_put(
        caller=Caller.system("tests", account_id=principal.account_id),
        account=principal.account,
        name=name,
        document=document,
        principal=principal,
    )


# --- refusals -------------------------------------------------------------------


def snapshot() -> dict[str, list[Any]]:
    """Everything an authorization refusal must leave as it was."""

    def rows(qs: Any, *fields: str) -> list[Any]:
        return sorted(qs.values_list(*fields), key=repr)

    return {
        "keys": rows(Key.objects, "id", "state", "policy", "description", "deletion_date", "current_material_id"),
        "grants": rows(Grant.objects, "grant_id", "operations", "constraints", "retired_at", "retired_how"),
        "aliases": rows(Alias.objects, "name", "key_id"),
        "tags": rows(Tag.objects, "key_id", "tag_key", "tag_value"),
        "policies": rows(IdentityPolicy.objects, "account_id", "name", "principal_id", "document"),
        "attachments": rows(PolicyAttachment.objects, "principal_id", "policy_id"),
        "access_keys": rows(AccessKey.objects, "access_key_id", "status"),
    }


def refused(code: str, call: Callable[..., Any], **params: Any) -> tuple[ClientError, AuditEvent]:
    """``call(**params)`` fails with ``code``, is audited exactly once and changes nothing."""
    before = snapshot()
    last = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    try:
        call(**params)
    except ClientError as exc:
        # Without its traceback: the frames would keep botocore's HTTP
        # response, and the live server's keep-alive thread, alive.
        error = exc.with_traceback(None)
    else:
        pytest.fail(f"{call.__name__} did not fail with {code}")
    assert error.response["Error"]["Code"] == code, error.response["Error"]
    assert snapshot() == before
    events = list(AuditEvent.objects.filter(id__gt=last))
    assert len(events) == 1, [(e.event_name, e.error_code) for e in events]
    assert events[0].error_code == code
    return error, events[0]


def denied(
    call: Callable[..., Any],
    *,
    who: Persona,
    action: str,
    resource: str,
    reason: str = "implicit-deny",
    clause: str | None = None,
    source: str | None = None,
    sid: str | None = None,
    **params: Any,
) -> AuditEvent:
    """An AccessDeniedException naming who, what and which resource, audited with the decision."""
    error, event = refused(DENIED, call, **params)
    message = error.response["Error"]["Message"]
    assert message.startswith(
        f"User: {who.principal.arn} is not authorized to perform: {action} on resource: {resource} "
    )
    if clause is not None:
        assert message.endswith(clause.format(action=action)), message
    assert event.principal_arn == who.principal.arn
    assert event.event_name == action.removeprefix("kms:")
    decision = event.additional_event_data["decision"]
    assert decision["allowed"] is False
    assert decision["reason"] == reason
    assert decision["explanation"]
    if source is None:
        assert decision["statement"] is None
    else:
        assert decision["statement"]["source"] == source
        if sid is not None:
            assert decision["statement"]["sid"] == sid
    return event


# --- fixtures -------------------------------------------------------------------


@pytest.fixture
def kms_client(kms_client: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """conftest's client factory, closing its clients' keep-alive connections before the server stops."""
    made: list[Any] = []

    def make(persona: Persona, **kwargs: Any) -> Any:
        made.append(kms_client(persona, **kwargs))
        return made[-1]

    yield make
    for client in made:
        client.close()


@pytest.fixture
def admin(kms_client: Callable[..., Any], key_admin: Persona) -> Any:
    return kms_client(key_admin)


@pytest.fixture
def alice(make_persona: Callable[..., Persona]) -> Persona:
    """Account A, no identity policy until a test gives her one."""
    return make_persona("alice")


@pytest.fixture
def bob(make_persona: Callable[..., Persona]) -> Persona:
    return make_persona("bob")


@pytest.fixture
def carol(make_persona: Callable[..., Persona]) -> Persona:
    return make_persona("carol")


@pytest.fixture
def bert(make_persona: Callable[..., Persona]) -> Persona:
    """Account B, no identity policy."""
    return make_persona("bert", account_id=B)


def grant(admin: Any, key: Key, grantee: Persona, *operations: str, **extra: Any) -> tuple[str, str]:
    answer = admin.create_grant(
        KeyId=str(key.id), GranteePrincipal=grantee.principal.arn, Operations=list(operations), **extra
    )
    return answer["GrantId"], answer["GrantToken"]


def encrypt(client: Any, key_ref: str, context: dict[str, str] | None = None, **extra: Any) -> bytes:
    params: dict[str, Any] = {"KeyId": key_ref, "Plaintext": DATA, **extra}
    if context is not None:
        params["EncryptionContext"] = context
    return client.encrypt(**params)["CiphertextBlob"]


# --- key policy -----------------------------------------------------------------


def test_it_allows_a_principal_the_key_policy_names_without_any_identity_policy(
    make_key, kms_client, bob, carol
) -> None:
    key = make_key(policy=key_policy(allow({"AWS": bob.principal.arn}, "kms:Encrypt", "kms:Decrypt", sid="Bob")))
    as_bob, as_carol = kms_client(bob), kms_client(carol)

    blob = encrypt(as_bob, str(key.id))
    assert as_bob.decrypt(CiphertextBlob=blob)["Plaintext"] == DATA

    denied(
        as_carol.encrypt,
        who=carol,
        action="kms:Encrypt",
        resource=key.arn,
        clause=NO_RESOURCE_POLICY,
        KeyId=str(key.id),
        Plaintext=DATA,
    )
    # Named for Encrypt and Decrypt only.
    denied(
        as_bob.describe_key,
        who=bob,
        action="kms:DescribeKey",
        resource=key.arn,
        clause=NO_RESOURCE_POLICY,
        KeyId=str(key.id),
    )


def test_it_delegates_to_identity_policies_when_the_key_policy_names_the_account(
    make_key, kms_client, alice, bob
) -> None:
    default_key = make_key()  # AWS's default key policy: the account root may do kms:*
    give(alice, "UseKeys", identity(may("kms:Encrypt", "kms:Decrypt")))
    as_alice, as_bob = kms_client(alice), kms_client(bob)

    blob = encrypt(as_alice, str(default_key.id))
    assert as_alice.decrypt(CiphertextBlob=blob)["Plaintext"] == DATA
    denied(
        as_bob.encrypt,
        who=bob,
        action="kms:Encrypt",
        resource=default_key.arn,
        clause=NO_IDENTITY_POLICY,
        KeyId=str(default_key.id),
        Plaintext=DATA,
    )

    # A key policy that does not name the account ignores identity policies.
    closed = make_key(policy=key_policy())
    denied(
        as_alice.encrypt,
        who=alice,
        action="kms:Encrypt",
        resource=closed.arn,
        clause=NO_RESOURCE_POLICY,
        KeyId=str(closed.id),
        Plaintext=DATA,
    )


# --- identity policies ----------------------------------------------------------


def test_it_limits_an_identity_policy_to_the_keys_it_names(make_key, kms_client, alice) -> None:
    mine, other = make_key(), make_key()
    give(alice, "OneKey", identity(may("kms:Encrypt", "kms:Decrypt", resource=mine.arn, sid="OnlyMine")))
    as_alice = kms_client(alice)

    assert as_alice.decrypt(CiphertextBlob=encrypt(as_alice, str(mine.id)))["Plaintext"] == DATA
    denied(
        as_alice.encrypt,
        who=alice,
        action="kms:Encrypt",
        resource=other.arn,
        clause=NO_IDENTITY_POLICY,
        KeyId=str(other.id),
        Plaintext=DATA,
    )


def test_it_limits_an_identity_policy_to_the_actions_it_lists(make_key, kms_client, key_admin, alice) -> None:
    key = make_key()
    give(alice, "EncryptOnly", identity(may("kms:Encrypt")))
    as_alice = kms_client(alice)
    blob = encrypt(as_alice, str(key.id))

    denied(
        as_alice.decrypt,
        who=alice,
        action="kms:Decrypt",
        resource=key.arn,
        clause=NO_IDENTITY_POLICY,
        CiphertextBlob=blob,
    )
    denied(as_alice.describe_key, who=alice, action="kms:DescribeKey", resource=key.arn, KeyId=str(key.id))

    # An attached managed policy counts as hers, until it is detached.
    system = Caller.system("tests", account_id=A)
    account = alice.principal.account
    readers = identity_policy_put(
        caller=system, account=account, name="Readers", document=identity(may("kms:Describe*"))
    )
    policy_attach(caller=system, principal=alice.principal, policy=readers)
    assert as_alice.describe_key(KeyId=str(key.id))["KeyMetadata"]["KeyId"] == str(key.id)
    policy_detach(caller=system, principal=alice.principal, policy=readers)
    denied(as_alice.describe_key, who=alice, action="kms:DescribeKey", resource=key.arn, KeyId=str(key.id))


def test_it_requires_identity_policies_for_account_level_actions(kms_client, make_persona, bob) -> None:
    lister = make_persona("lister", policy=identity(may("kms:ListKeys")))
    creator = make_persona("creator", policy=identity(may("kms:CreateKey")))
    account_resource = f"arn:aws:kms:{REGION}:{A}:*"
    as_bob, as_lister, as_creator = kms_client(bob), kms_client(lister), kms_client(creator)

    denied(as_bob.list_keys, who=bob, action="kms:ListKeys", resource=account_resource, clause=NO_IDENTITY_POLICY)
    denied(as_bob.create_key, who=bob, action="kms:CreateKey", resource=account_resource, clause=NO_IDENTITY_POLICY)
    denied(as_lister.create_key, who=lister, action="kms:CreateKey", resource=account_resource)

    created = as_creator.create_key(Description="mine")["KeyMetadata"]["KeyId"]
    assert str(Key.objects.get(id=created).id) == created
    assert created in [k["KeyId"] for k in as_lister.list_keys()["Keys"]]


# --- grants ---------------------------------------------------------------------


def test_it_allows_a_grantee_at_once_and_only_for_the_granted_operations(make_key, admin, kms_client, bob) -> None:
    key = make_key()
    as_bob = kms_client(bob)
    denied(
        as_bob.encrypt,
        who=bob,
        action="kms:Encrypt",
        resource=key.arn,
        clause=NO_IDENTITY_POLICY,
        KeyId=str(key.id),
        Plaintext=DATA,
    )

    grant_id, token = grant(admin, key, bob, "Encrypt", "Decrypt")
    # The token is usable straight away, and the grant works without it too.
    blob = encrypt(as_bob, str(key.id), GrantTokens=[token])
    assert as_bob.decrypt(CiphertextBlob=blob, GrantTokens=[token])["Plaintext"] == DATA
    assert as_bob.decrypt(CiphertextBlob=encrypt(as_bob, key.arn))["Plaintext"] == DATA
    assert [g["GrantId"] for g in admin.list_grants(KeyId=str(key.id))["Grants"]] == [grant_id]

    denied(as_bob.describe_key, who=bob, action="kms:DescribeKey", resource=key.arn, KeyId=str(key.id))
    denied(
        as_bob.generate_data_key,
        who=bob,
        action="kms:GenerateDataKey",
        resource=key.arn,
        KeyId=str(key.id),
        KeySpec="AES_256",
        GrantTokens=[token],
    )


def test_it_enforces_a_grants_encryption_context_subset(make_key, admin, kms_client, bob) -> None:
    key = make_key()
    grant_id, _ = grant(admin, key, bob, "Encrypt", "Decrypt", Constraints={"EncryptionContextSubset": {"dept": "hr"}})
    as_bob = kms_client(bob)

    blob = encrypt(as_bob, str(key.id), {"dept": "hr", "case": "7"})
    assert as_bob.decrypt(CiphertextBlob=blob, EncryptionContext={"dept": "hr", "case": "7"})["Plaintext"] == DATA
    for context in ({"dept": "it"}, {"case": "7"}, None):
        event = denied(
            as_bob.encrypt,
            who=bob,
            action="kms:Encrypt",
            resource=key.arn,
            KeyId=str(key.id),
            Plaintext=DATA,
            **({"EncryptionContext": context} if context is not None else {}),
        )
        assert grant_id in event.additional_event_data["decision"]["explanation"]


def test_it_enforces_a_grants_encryption_context_equals(make_key, admin, kms_client, bob) -> None:
    key = make_key()
    grant(admin, key, bob, "Encrypt", Constraints={"EncryptionContextEquals": {"dept": "hr"}})
    as_bob = kms_client(bob)

    encrypt(as_bob, str(key.id), {"dept": "hr"})
    for context in ({"dept": "hr", "case": "7"}, {"dept": "HR"}, {}):
        denied(
            as_bob.encrypt,
            who=bob,
            action="kms:Encrypt",
            resource=key.arn,
            KeyId=str(key.id),
            Plaintext=DATA,
            EncryptionContext=context,
        )


def test_it_keeps_a_grant_made_through_a_subset_grant_as_strict_as_it(make_key, admin, kms_client, bob, carol) -> None:
    key = make_key()
    subset = {"EncryptionContextSubset": {"dept": "hr"}}
    grant(admin, key, bob, "CreateGrant", "Encrypt", "Decrypt", Constraints=subset)
    as_bob = kms_client(bob)

    # bob holds no policy: only his grant lets him create grants, and not looser ones.
    for who, extra in [
        (bob, {}),  # unconstrained, for himself
        (carol, {}),  # unconstrained, for someone else
        (carol, {"Constraints": {"EncryptionContextSubset": {"case": "7"}}}),  # other pairs
        (carol, {"Constraints": {"EncryptionContextSubset": {"dept": "it"}}}),  # another value
        (carol, {"Constraints": {"EncryptionContextEquals": {"case": "7"}}}),  # equals without dept=hr
    ]:
        event = denied(
            as_bob.create_grant,
            who=bob,
            action="kms:CreateGrant",
            resource=key.arn,
            KeyId=str(key.id),
            GranteePrincipal=who.principal.arn,
            Operations=["Encrypt", "Decrypt"],
            **extra,
        )
        assert "stricter encryption context constraints" in event.additional_event_data["decision"]["explanation"]
    # More operations than its own grant, even with its constraint.
    denied(
        as_bob.create_grant,
        who=bob,
        action="kms:CreateGrant",
        resource=key.arn,
        KeyId=str(key.id),
        GranteePrincipal=carol.principal.arn,
        Operations=["Encrypt", "GenerateDataKey"],
        Constraints=subset,
    )
    assert Grant.objects.filter(grantee_principal=carol.principal.arn).count() == 0

    # As strict or stricter: the same subset, a larger one, or an equals holding its pairs.
    stricter = {"EncryptionContextSubset": {"dept": "hr", "case": "7"}}
    as_bob.create_grant(
        KeyId=str(key.id), GranteePrincipal=carol.principal.arn, Operations=["Encrypt"], Constraints=stricter
    )
    as_carol = kms_client(carol)
    encrypt(as_carol, str(key.id), {"dept": "hr", "case": "7", "x": "y"})
    denied(
        as_carol.encrypt,
        who=carol,
        action="kms:Encrypt",
        resource=key.arn,
        KeyId=str(key.id),
        Plaintext=DATA,
        EncryptionContext={"dept": "hr"},
    )
    as_bob.create_grant(
        KeyId=str(key.id),
        GranteePrincipal=carol.principal.arn,
        Operations=["Decrypt"],
        Constraints={"EncryptionContextEquals": {"dept": "hr", "case": "7"}},
    )
    as_bob.create_grant(
        KeyId=str(key.id), GranteePrincipal=bob.principal.arn, Operations=["Decrypt"], Constraints=subset
    )
    assert Grant.objects.filter(key=key, retired_at__isnull=True).count() == 4


def test_it_keeps_a_grant_made_through_an_equals_grant_equally_strict(make_key, admin, kms_client, bob, carol) -> None:
    key = make_key()
    equals = {"EncryptionContextEquals": {"dept": "hr"}}
    grant(admin, key, bob, "CreateGrant", "Encrypt", Constraints=equals)
    as_bob = kms_client(bob)

    for constraints in (
        None,
        {"EncryptionContextSubset": {"dept": "hr"}},
        {"EncryptionContextEquals": {"dept": "hr", "case": "7"}},
    ):
        denied(
            as_bob.create_grant,
            who=bob,
            action="kms:CreateGrant",
            resource=key.arn,
            KeyId=str(key.id),
            GranteePrincipal=carol.principal.arn,
            Operations=["Encrypt"],
            **({"Constraints": constraints} if constraints else {}),
        )
    as_bob.create_grant(
        KeyId=str(key.id), GranteePrincipal=carol.principal.arn, Operations=["Encrypt"], Constraints=equals
    )
    encrypt(kms_client(carol), str(key.id), {"dept": "hr"})


# --- explicit deny --------------------------------------------------------------


def test_it_lets_a_key_policy_deny_override_every_allow_and_grant(make_key, admin, kms_client, alice) -> None:
    key = make_key(
        policy=key_policy(
            allow({"AWS": root(A)}, "kms:*", sid="Account"),
            allow({"AWS": alice.principal.arn}, "kms:Encrypt", "kms:DescribeKey", sid="Alice"),
            deny({"AWS": alice.principal.arn}, "kms:Encrypt", sid="NoAliceEncrypt"),
        )
    )
    give(alice, "FullKmsAccess", identity(may("kms:*")))
    _, token = grant(admin, key, alice, "Encrypt")
    as_alice = kms_client(alice)

    denied(
        as_alice.encrypt,
        who=alice,
        action="kms:Encrypt",
        resource=key.arn,
        reason="explicit-deny",
        clause=EXPLICIT_IN_KEY_POLICY,
        source="key-policy",
        sid="NoAliceEncrypt",
        KeyId=str(key.id),
        Plaintext=DATA,
        GrantTokens=[token],
    )
    assert as_alice.describe_key(KeyId=str(key.id))["KeyMetadata"]["Arn"] == key.arn


def test_it_lets_an_identity_policy_deny_override_every_allow_and_grant(make_key, admin, kms_client, alice) -> None:
    key = make_key(policy=key_policy(allow({"AWS": alice.principal.arn}, "kms:*", sid="Alice")))
    give(alice, "FullKmsAccess", identity(may("kms:*")))
    give(alice, "NoEncrypt", identity({"Sid": "Never", "Effect": "Deny", "Action": "kms:Encrypt", "Resource": "*"}))
    grant(admin, key, alice, "Encrypt")
    as_alice = kms_client(alice)

    denied(
        as_alice.encrypt,
        who=alice,
        action="kms:Encrypt",
        resource=key.arn,
        reason="explicit-deny",
        clause=EXPLICIT_IN_IDENTITY_POLICY,
        source="identity-policy:NoEncrypt",
        sid="Never",
        KeyId=str(key.id),
        Plaintext=DATA,
    )
    assert as_alice.describe_key(KeyId=str(key.id))["KeyMetadata"]["Arn"] == key.arn


# --- conditions -----------------------------------------------------------------


def test_it_checks_an_encryption_context_condition(make_key, kms_client, alice) -> None:
    key = make_key(
        policy=key_policy(
            allow(
                {"AWS": alice.principal.arn},
                "kms:Encrypt",
                sid="PayrollOnly",
                StringEquals={"kms:EncryptionContext:app": "payroll"},
            )
        )
    )
    as_alice = kms_client(alice)

    encrypt(as_alice, str(key.id), {"app": "payroll", "run": "2024-06"})
    for context in ({"app": "billing"}, {"App": "Payroll"}, {}):
        denied(
            as_alice.encrypt,
            who=alice,
            action="kms:Encrypt",
            resource=key.arn,
            clause=NO_RESOURCE_POLICY,
            KeyId=str(key.id),
            Plaintext=DATA,
            EncryptionContext=context,
        )


def test_it_checks_the_source_ip(make_key, kms_client, alice) -> None:
    private = make_key(
        policy=key_policy(allow({"AWS": alice.principal.arn}, "kms:Encrypt", IpAddress={"aws:SourceIp": "10.0.0.0/8"}))
    )
    loopback = make_key(
        policy=key_policy(
            allow({"AWS": alice.principal.arn}, "kms:Encrypt", IpAddress={"aws:SourceIp": ["127.0.0.0/8", "::1/128"]})
        )
    )
    as_alice = kms_client(alice)

    denied(
        as_alice.encrypt,
        who=alice,
        action="kms:Encrypt",
        resource=private.arn,
        KeyId=str(private.id),
        Plaintext=DATA,
    )
    encrypt(as_alice, str(loopback.id))  # the live server sees 127.0.0.1


def test_it_refuses_schedule_key_deletion_without_mfa(make_key, admin, kms_client, key_admin, alice) -> None:
    # AWS's documented example, as an Allow that needs MFA ...
    allowed_with_mfa = make_key(
        policy=key_policy(
            allow({"AWS": alice.principal.arn}, "kms:DescribeKey"),
            allow(
                {"AWS": alice.principal.arn},
                "kms:ScheduleKeyDeletion",
                sid="DeleteWithMfa",
                Bool={"aws:MultiFactorAuthPresent": "true"},
            ),
        )
    )
    as_alice = kms_client(alice)
    denied(
        as_alice.schedule_key_deletion,
        who=alice,
        action="kms:ScheduleKeyDeletion",
        resource=allowed_with_mfa.arn,
        KeyId=str(allowed_with_mfa.id),
        PendingWindowInDays=7,
    )
    assert as_alice.describe_key(KeyId=str(allowed_with_mfa.id))["KeyMetadata"]["KeyState"] == "Enabled"

    # ... and as a Deny without MFA, which binds even the key administrator.
    deny_without_mfa = make_key(
        policy=key_policy(
            deny(
                {"AWS": root(A)},
                "kms:ScheduleKeyDeletion",
                sid="NoDeleteWithoutMfa",
                BoolIfExists={"aws:MultiFactorAuthPresent": "false"},
            )
        )
    )
    denied(
        admin.schedule_key_deletion,
        who=key_admin,
        action="kms:ScheduleKeyDeletion",
        resource=deny_without_mfa.arn,
        reason="explicit-deny",
        clause=EXPLICIT_IN_KEY_POLICY,
        source="key-policy",
        sid="NoDeleteWithoutMfa",
        KeyId=str(deny_without_mfa.id),
    )
    assert Key.objects.get(pk=deny_without_mfa.pk).state == KeyState.ENABLED


def test_it_checks_the_caller_account(make_key, kms_client, alice, outsider) -> None:
    key = make_key(
        policy=key_policy(allow("*", "kms:Encrypt", sid="OwnAccountOnly", StringEquals={"kms:CallerAccount": A}))
    )
    encrypt(kms_client(alice), str(key.id))
    # outsider's own account gives it kms:*, but the condition names account A only.
    denied(
        kms_client(outsider).encrypt,
        who=outsider,
        action="kms:Encrypt",
        resource=key.arn,
        clause=NO_RESOURCE_POLICY,
        KeyId=key.arn,
        Plaintext=DATA,
    )


def test_it_checks_the_alias_a_key_was_requested_by(make_key, admin, kms_client, alice) -> None:
    key = make_key(
        policy=key_policy(
            allow(
                {"AWS": alice.principal.arn},
                "kms:Encrypt",
                sid="ByAlias",
                StringEquals={"kms:RequestAlias": "alias/payroll"},
            )
        )
    )
    admin.create_alias(AliasName="alias/payroll", TargetKeyId=str(key.id))
    admin.create_alias(AliasName="alias/other", TargetKeyId=str(key.id))
    as_alice = kms_client(alice)

    encrypt(as_alice, "alias/payroll")
    encrypt(as_alice, f"arn:aws:kms:{REGION}:{A}:alias/payroll")
    for ref in (str(key.id), key.arn, "alias/other"):
        denied(as_alice.encrypt, who=alice, action="kms:Encrypt", resource=key.arn, KeyId=ref, Plaintext=DATA)


def test_it_checks_resource_tags(make_key, admin, kms_client, alice) -> None:
    billing = make_key(tags=[{"TagKey": "team", "TagValue": "billing"}])
    ops = make_key(tags=[{"TagKey": "team", "TagValue": "ops"}])
    give(alice, "BillingKeys", identity(may("kms:Encrypt", StringEquals={"aws:ResourceTag/team": "billing"})))
    as_alice = kms_client(alice)

    encrypt(as_alice, str(billing.id))
    denied(
        as_alice.encrypt,
        who=alice,
        action="kms:Encrypt",
        resource=ops.arn,
        clause=NO_IDENTITY_POLICY,
        KeyId=str(ops.id),
        Plaintext=DATA,
    )
    # Tags are read when the request is decided, not cached with the policy.
    admin.tag_resource(KeyId=str(ops.id), Tags=[{"TagKey": "team", "TagValue": "billing"}])
    encrypt(as_alice, str(ops.id))


# --- cross-account --------------------------------------------------------------


def test_it_needs_both_the_key_policy_and_the_other_accounts_identity_policy(
    make_key, kms_client, outsider, bert
) -> None:
    shared = make_key(policy=key_policy(allow({"AWS": root(B)}, "kms:Encrypt", "kms:Decrypt", sid="AccountB")))
    as_outsider, as_bert = kms_client(outsider), kms_client(bert)

    blob = encrypt(as_outsider, shared.arn)
    assert as_outsider.decrypt(CiphertextBlob=blob)["Plaintext"] == DATA

    # The key policy allows account B, but bert's own account gives him nothing.
    denied(
        as_bert.encrypt,
        who=bert,
        action="kms:Encrypt",
        resource=shared.arn,
        clause=NO_IDENTITY_POLICY,
        KeyId=shared.arn,
        Plaintext=DATA,
    )
    # outsider's account gives it kms:*, but this key's policy does not name account B.
    private = make_key()
    denied(
        as_outsider.encrypt,
        who=outsider,
        action="kms:Encrypt",
        resource=private.arn,
        clause=NO_RESOURCE_POLICY,
        KeyId=private.arn,
        Plaintext=DATA,
    )
    # Naming bert himself is not enough either: a cross-account call needs his account's consent.
    named = make_key(policy=key_policy(allow({"AWS": bert.principal.arn}, "kms:Encrypt", sid="Bert")))
    denied(
        as_bert.encrypt,
        who=bert,
        action="kms:Encrypt",
        resource=named.arn,
        clause=NO_IDENTITY_POLICY,
        KeyId=named.arn,
        Plaintext=DATA,
    )
    give(bert, "UseSharedKeys", identity(may("kms:Encrypt", resource=f"arn:aws:kms:*:{A}:key/*")))
    encrypt(as_bert, named.arn)
    encrypt(as_bert, shared.arn)


# --- retiring and revoking ------------------------------------------------------


def _grant_row(grant_id: str) -> Grant:
    return Grant.objects.get(grant_id=grant_id)


def test_it_lets_the_retiring_principal_retire_a_grant(make_key, admin, kms_client, bob, carol) -> None:
    key = make_key()
    grant_id, _ = grant(admin, key, bob, "Encrypt", RetiringPrincipal=carol.principal.arn)
    as_bob, as_carol = kms_client(bob), kms_client(carol)
    encrypt(as_bob, str(key.id))

    # carol holds no policy at all: the grant itself lets her retire it.
    as_carol.retire_grant(KeyId=key.arn, GrantId=grant_id)

    row = _grant_row(grant_id)
    assert row.retired_at is not None and row.retired_how == "retired"
    denied(as_bob.encrypt, who=bob, action="kms:Encrypt", resource=key.arn, KeyId=str(key.id), Plaintext=DATA)


def test_it_lets_the_grantee_retire_only_a_grant_that_lists_retire_grant(make_key, admin, kms_client, bob) -> None:
    key = make_key()
    plain_id, plain_token = grant(admin, key, bob, "Encrypt")
    retirable_id, retirable_token = grant(admin, key, bob, "Encrypt", "RetireGrant")
    as_bob = kms_client(bob)

    denied(as_bob.retire_grant, who=bob, action="kms:RetireGrant", resource=key.arn, KeyId=key.arn, GrantId=plain_id)
    denied(as_bob.retire_grant, who=bob, action="kms:RetireGrant", resource=key.arn, GrantToken=plain_token)
    assert _grant_row(plain_id).retired_at is None

    as_bob.retire_grant(GrantToken=retirable_token)
    assert _grant_row(retirable_id).retired_how == "retired"
    assert _grant_row(plain_id).retired_at is None


def test_it_refuses_to_retire_a_grant_for_anyone_else(make_key, admin, kms_client, make_persona, bob, outsider) -> None:
    key = make_key()
    grant_id, token = grant(admin, key, bob, "Encrypt", "RetireGrant", RetiringPrincipal=bob.principal.arn)
    stranger = make_persona("stranger", policy=identity(may("kms:Encrypt", "kms:Decrypt")))

    denied(
        kms_client(stranger).retire_grant,
        who=stranger,
        action="kms:RetireGrant",
        resource=key.arn,
        clause=RETIRE_NOT_NAMED,
        KeyId=key.arn,
        GrantId=grant_id,
    )
    denied(
        kms_client(outsider).retire_grant,
        who=outsider,
        action="kms:RetireGrant",
        resource=key.arn,
        clause=RETIRE_NOT_NAMED,
        GrantToken=token,
    )
    assert _grant_row(grant_id).retired_at is None


def test_it_does_not_let_kms_retire_grant_in_a_policy_alone_retire_others_grants(
    make_key, admin, kms_client, make_persona, bob, carol
) -> None:
    key = make_key()  # its default policy lets the account's identity policies decide
    grant_id, token = grant(admin, key, bob, "Encrypt", RetiringPrincipal=carol.principal.arn)
    retirer = make_persona("retirer", policy=identity(may("kms:RetireGrant", "kms:ListGrants")))
    as_retirer = kms_client(retirer)

    for params in ({"KeyId": key.arn, "GrantId": grant_id}, {"GrantToken": token}):
        event = denied(
            as_retirer.retire_grant,
            who=retirer,
            action="kms:RetireGrant",
            resource=key.arn,
            clause=RETIRE_NOT_NAMED,
            **params,
        )
        assert "RevokeGrant" in event.additional_event_data["decision"]["explanation"]
    assert _grant_row(grant_id).retired_at is None
    encrypt(kms_client(bob), str(key.id))


def test_it_lets_the_retiring_accounts_principals_retire_when_their_policy_allows(
    make_key, admin, kms_client, make_persona, bob, bert
) -> None:
    key = make_key()
    grant_id, _ = grant(admin, key, bob, "Encrypt", RetiringPrincipal=root(A))
    # The grant names account A: its principals retire it if their identity policy allows kms:RetireGrant.
    without = make_persona("without")
    denied(
        kms_client(without).retire_grant,
        who=without,
        action="kms:RetireGrant",
        resource=key.arn,
        clause=RETIRE_NOT_NAMED,
        KeyId=key.arn,
        GrantId=grant_id,
    )
    give(bert, "Retire", identity(may("kms:RetireGrant")))
    denied(
        kms_client(bert).retire_grant,
        who=bert,
        action="kms:RetireGrant",
        resource=key.arn,
        clause=RETIRE_NOT_NAMED,
        KeyId=key.arn,
        GrantId=grant_id,
    )
    retirer = make_persona("retirer", policy=identity(may("kms:RetireGrant", resource=key.arn)))
    kms_client(retirer).retire_grant(KeyId=key.arn, GrantId=grant_id)
    assert _grant_row(grant_id).retired_how == "retired"
    event = AuditEvent.objects.filter(event_name="RetireGrant", error_code="").get()
    assert event.principal_arn == retirer.principal.arn


def test_it_lets_an_identity_policy_deny_stop_the_retiring_principal(make_key, admin, kms_client, bob, carol) -> None:
    key = make_key()
    grant_id, _ = grant(admin, key, bob, "Encrypt", RetiringPrincipal=carol.principal.arn)
    give(carol, "NoRetiring", identity({"Effect": "Deny", "Action": "kms:RetireGrant", "Resource": "*", "Sid": "No"}))
    denied(
        kms_client(carol).retire_grant,
        who=carol,
        action="kms:RetireGrant",
        resource=key.arn,
        reason="explicit-deny",
        clause=EXPLICIT_IN_IDENTITY_POLICY,
        source="identity-policy:NoRetiring",
        sid="No",
        KeyId=key.arn,
        GrantId=grant_id,
    )
    assert _grant_row(grant_id).retired_at is None


def test_it_needs_kms_revoke_grant_to_revoke(make_key, admin, kms_client, make_persona, bob, carol) -> None:
    key = make_key()
    grant_id, _ = grant(admin, key, bob, "Encrypt", "RetireGrant", RetiringPrincipal=carol.principal.arn)
    revoker = make_persona("revoker", policy=identity(may("kms:RevokeGrant", resource=key.arn)))

    # Neither the grantee nor the retiring principal may revoke: that is kms:RevokeGrant's.
    for who in (bob, carol):
        denied(
            kms_client(who).revoke_grant,
            who=who,
            action="kms:RevokeGrant",
            resource=key.arn,
            clause=NO_IDENTITY_POLICY,
            KeyId=key.arn,
            GrantId=grant_id,
        )
    kms_client(revoker).revoke_grant(KeyId=key.arn, GrantId=grant_id)
    row = _grant_row(grant_id)
    assert row.retired_at is not None and row.retired_how == "revoked"
    assert admin.list_grants(KeyId=str(key.id))["Grants"] == []


# --- the policy lockout safety check --------------------------------------------


def test_it_refuses_a_key_policy_that_would_lock_the_caller_out(make_key, admin, kms_client, key_admin, bob) -> None:
    original = key_policy(allow({"AWS": bob.principal.arn}, "kms:Encrypt"))
    key = make_key(policy=original)
    lockout = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [allow({"AWS": bob.principal.arn}, "kms:*", sid="BobOnly")],
        }
    )

    error, _ = refused("MalformedPolicyDocumentException", admin.put_key_policy, KeyId=str(key.id), Policy=lockout)
    assert "will not allow you to update the key policy" in error.response["Error"]["Message"]
    assert admin.get_key_policy(KeyId=str(key.id))["Policy"] == original

    admin.put_key_policy(KeyId=str(key.id), Policy=lockout, BypassPolicyLockoutSafetyCheck=True)
    assert Key.objects.get(pk=key.pk).policy == lockout
    # As the check warned: key-admin can no longer manage the key; bob can.
    denied(admin.get_key_policy, who=key_admin, action="kms:GetKeyPolicy", resource=key.arn, KeyId=str(key.id))
    assert kms_client(bob).get_key_policy(KeyId=str(key.id))["Policy"] == lockout


def test_it_refuses_create_key_with_a_lockout_policy_unless_bypassed(admin, bob) -> None:
    lockout = json.dumps(
        {"Version": "2012-10-17", "Statement": [allow({"AWS": bob.principal.arn}, "kms:*", sid="BobOnly")]}
    )
    refused("MalformedPolicyDocumentException", admin.create_key, Policy=lockout)

    created = admin.create_key(Policy=lockout, BypassPolicyLockoutSafetyCheck=True)["KeyMetadata"]["KeyId"]
    assert Key.objects.get(id=created).policy == lockout


# --- bad input ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "says"),
    [
        ('{"Version": "2012-10-17", "Statement": [', "not valid JSON"),
        ("[]", "must be a JSON object"),
        (
            key_policy(allow("*", "kms:Encrypt", StringEqualz={"kms:CallerAccount": "111122223333"})),
            "unknown condition operator: StringEqualz",
        ),
        (
            json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}
            ),
            "no Principal",
        ),
    ],
    ids=["truncated-json", "not-an-object", "unknown-operator", "no-principal"],
)
def test_it_refuses_a_malformed_key_policy(make_key, admin, policy, says) -> None:
    key = make_key()
    for call, params in ((admin.put_key_policy, {"KeyId": str(key.id)}), (admin.create_key, {})):
        error, _ = refused("MalformedPolicyDocumentException", call, Policy=policy, **params)
        assert says in error.response["Error"]["Message"]


def test_it_refuses_a_key_policy_over_32_kib(make_key, admin) -> None:
    key = make_key()
    padding = [allow({"AWS": arn(A, f"user-{i:04d}")}, "kms:Encrypt", sid=f"Padding{i:04d}") for i in range(400)]
    big = key_policy(*padding)
    assert 32 * 1024 < len(big.encode()) < 131072  # under the API model's own bound
    error, _ = refused("MalformedPolicyDocumentException", admin.put_key_policy, KeyId=str(key.id), Policy=big)
    assert "32768" in error.response["Error"]["Message"]
    refused("MalformedPolicyDocumentException", admin.create_key, Policy=big)


def test_it_refuses_a_grant_for_a_principal_that_does_not_exist(make_key, admin) -> None:
    key = make_key()
    for grantee in (arn(A, "nobody"), arn(B, "nobody"), "arn:aws:iam::not-an-account:user/x", "bob"):
        refused(
            "InvalidArnException",
            admin.create_grant,
            KeyId=str(key.id),
            GranteePrincipal=grantee,
            Operations=["Encrypt"],
        )
    refused(
        "InvalidArnException",
        admin.create_grant,
        KeyId=str(key.id),
        GranteePrincipal=root(A),
        RetiringPrincipal=arn(A, "nobody"),
        Operations=["Encrypt"],
    )


def test_it_refuses_grant_operations_that_make_no_sense(make_key, kms_client, key_admin, bob) -> None:
    key = make_key()
    loose = kms_client(key_admin, validate=False)
    cases = [
        ({"Operations": []}, "at least one operation"),
        ({"Operations": ["Sign"]}, "Sign"),
        ({"Operations": ["Encrypt", "GenerateMac"]}, "GenerateMac"),
        ({"Operations": ["DescribeKey"], "Constraints": {"EncryptionContextSubset": {"a": "b"}}}, "DescribeKey"),
        (
            {
                "Operations": ["Encrypt"],
                "Constraints": {"EncryptionContextSubset": {"a": "b"}, "EncryptionContextEquals": {"a": "b"}},
            },
            "not both",
        ),
    ]
    for params, says in cases:
        error, _ = refused(
            "ValidationException", loose.create_grant, KeyId=str(key.id), GranteePrincipal=bob.principal.arn, **params
        )
        assert says in error.response["Error"]["Message"]


def test_it_refuses_an_invalid_grant_token(make_key, admin, kms_client, bob) -> None:
    key = make_key()
    _, token = grant(admin, key, bob, "Encrypt")
    as_bob = kms_client(bob)
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")

    for bad in ("not-a-grant-token", tampered):
        refused("InvalidGrantTokenException", as_bob.encrypt, KeyId=str(key.id), Plaintext=DATA, GrantTokens=[bad])
        refused("InvalidGrantTokenException", as_bob.retire_grant, GrantToken=bad)
        refused("InvalidGrantTokenException", admin.describe_key, KeyId=str(key.id), GrantTokens=[token, bad])
    encrypt(as_bob, str(key.id), GrantTokens=[token])


def test_it_refuses_a_grant_token_of_a_retired_grant_in_retire_grant(make_key, admin, kms_client, bob) -> None:
    key = make_key()
    grant_id, token = grant(admin, key, bob, "Encrypt", "RetireGrant")
    as_bob = kms_client(bob)
    as_bob.retire_grant(GrantToken=token)
    refused("NotFoundException", as_bob.retire_grant, GrantToken=token)
    assert _grant_row(grant_id).retired_how == "retired"
