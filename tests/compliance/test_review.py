"""Least-privilege review against the database: allowed against used from recorded
calls, the engine-confirmed generated policy (it allows every call seen and denies
calls it can prove unused), change previews on real policies (gains, losses,
findings created and resolved), external access, bad input and authorization."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from audit.models import AuditEvent
from compliance.review import analysis, services
from compliance.review.services import Proposal
from keys import services as key_services
from keys.models import Key
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import AccessDenied, InvalidArn, MalformedPolicyDocument, NotFound, ValidationError
from policies import evaluation as ev
from policies import services as policy_services
from policies.models import IdentityPolicy
from tests.conftest import OTHER_ACCOUNT, Persona

pytestmark = pytest.mark.django_db

BROAD = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]})
READ = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kmsweb:DescribeFindings", "Resource": "*"}]}
)


def doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def root_policy(account_id: str, *extra: dict[str, Any]) -> str:
    return doc(
        {
            "Sid": "Root",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
            "Action": "kms:*",
            "Resource": "*",
        },
        *extra,
    )


@pytest.fixture
def reader(make_persona: Callable[..., Persona]) -> Caller:
    return make_persona("reader", policy=READ).caller()


@pytest.fixture
def world(make_key: Callable[..., Key], make_persona: Callable[..., Persona], key_admin: Persona) -> dict[str, Any]:
    """An application with kms:* that used two keys a little, and a grant it never used."""
    payroll, ledger, spare = (make_key(description=d) for d in ("payroll", "ledger", "spare"))
    app = make_persona("app", policy=BROAD)
    caller = app.caller()
    for tenant in ("t1", "t2"):
        blob = key_services.key_encrypt(
            caller=caller, key=payroll, plaintext=b"x", context={"purpose": "payroll", "tenant": tenant}
        ).ciphertext
        key_services.key_decrypt(caller=caller, ciphertext=blob, context={"purpose": "payroll", "tenant": tenant})
    key_services.key_describe(caller=caller, key=ledger)
    key_services.key_list(caller=caller)
    grant, _ = policy_services.grant_create(
        caller=key_admin.caller(), key=spare, grantee_principal=app.principal.arn, operations=["Decrypt", "Encrypt"]
    )
    return {"payroll": payroll, "ledger": ledger, "spare": spare, "app": app, "grant": grant}


def call(action: str, key: Key | None, context: dict[str, str] | None = None) -> analysis.ObservedCall:
    if key is None:
        return analysis.ObservedCall(action, f"arn:aws:kms:us-east-1:{'1' * 12}:*", "1" * 12)
    pairs = tuple(sorted(context.items())) if context is not None else None
    return analysis.ObservedCall(action, key.arn, key.account_id, str(key.id), pairs)


def test_it_generates_a_policy_the_engine_confirms_for_every_call_seen(world: dict[str, Any], reader: Caller) -> None:
    app, payroll, ledger = world["app"], world["payroll"], world["ledger"]
    review = services.access_review_for(caller=reader, principal_arn=app.principal.arn, days=30)
    policy = review.generated
    # The recorded calls, grouped: two contexts per crypto action, a describe and a list.
    seen = {(c.action, c.key_id, c.encryption_context) for c in review.calls}
    assert ("kms:Encrypt", str(payroll.id), (("purpose", "payroll"), ("tenant", "t1"))) in seen
    assert ("kms:DescribeKey", str(ledger.id), None) in seen and ("kms:ListKeys", "", None) in seen
    statements = {s["Sid"]: s for s in policy["Statement"]}
    crypto = next(s for s in statements.values() if s["Resource"] == payroll.arn)
    assert crypto["Action"] == ["kms:Decrypt", "kms:Encrypt"]
    # Consistent across the calls: purpose; tenant varied, so it is no condition.
    assert crypto["Condition"] == {"StringEquals": {"kms:EncryptionContext:purpose": "payroll"}}
    assert next(s for s in statements.values() if s["Resource"] == ledger.arn)["Action"] == "kms:DescribeKey"
    assert statements["UsedWithoutAKey"] == {
        "Sid": "UsedWithoutAKey",
        "Effect": "Allow",
        "Action": "kms:ListKeys",
        "Resource": "*",
    }
    # The engine allows every call seen under the generated policy alone ...
    assert review.calls and all(analysis.policy_allows(policy, c).allowed for c in review.calls)
    # ... and denies what the trail proves unused: another key, another action, another context.
    assert not analysis.policy_allows(policy, call("kms:Decrypt", ledger, {"purpose": "payroll"})).allowed
    assert not analysis.policy_allows(policy, call("kms:Decrypt", world["spare"], {"purpose": "payroll"})).allowed
    assert not analysis.policy_allows(policy, call("kms:ScheduleKeyDeletion", payroll)).allowed
    assert not analysis.policy_allows(policy, call("kms:Encrypt", payroll, {"purpose": "hr"})).allowed
    assert not analysis.policy_allows(policy, call("kms:CreateKey", None)).allowed
    # A document the engine's validator (the identity-policy service's) accepts.
    ev.parse_policy(review.generated_text, kind="identity")
    (event,) = AuditEvent.objects.filter(event_name="GetAccessReview")
    assert event.event_source == "kmsweb.compliance" and event.error_code == ""
    assert event.request_parameters == {"principalArn": app.principal.arn, "days": 30}


def test_it_fails_loudly_when_a_policy_misses_a_call_seen(world: dict[str, Any]) -> None:
    payroll = world["payroll"]
    calls = [call("kms:Encrypt", payroll, {"purpose": "payroll"}), call("kms:Decrypt", payroll, {"purpose": "hr"})]
    narrow = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["kms:Encrypt", "kms:Decrypt"],
                "Resource": payroll.arn,
                "Condition": {"StringEquals": {"kms:EncryptionContext:purpose": "payroll"}},
            }
        ],
    }
    with pytest.raises(analysis.GenerationError, match="kms:Decrypt"):
        analysis.confirm_policy(narrow, calls)
    # The generator itself drops the condition when the contexts disagree.
    generated = analysis.generate_policy(calls)
    assert "Condition" not in generated["Statement"][0]


def test_it_reports_allowed_against_used_per_key_and_per_grant(world: dict[str, Any], reader: Caller) -> None:
    review = services.access_review_for(caller=reader, principal_arn=world["app"].principal.arn)
    rows = {k.key_id: k for k in review.keys}
    payroll = rows[str(world["payroll"].id)]
    assert set(payroll.used) == {"kms:Encrypt", "kms:Decrypt"}
    assert "kms:ScheduleKeyDeletion" in payroll.unused and "kms:Encrypt" not in payroll.unused
    # Only actions a symmetric key can serve: kms:* allows kms:Sign, but no call could use it.
    assert "kms:Sign" not in payroll.allowed and "kms:GetPublicKey" not in payroll.allowed
    assert payroll.allowed["kms:Encrypt"].startswith("identity policy")
    assert not payroll.external
    (grant,) = review.grants
    assert grant.grant_id == world["grant"].grant_id and grant.operations == ["Decrypt", "Encrypt"]
    assert grant.unused == ["Decrypt", "Encrypt"] and grant.used == {}
    assert review.other_actions.keys() == {"kms:ListKeys"}
    body = services.review_body(review)
    assert json.loads(body["GeneratedPolicy"]) == review.generated


def test_it_previews_a_key_policy_change_with_gains_losses_and_findings(
    world: dict[str, Any], reader: Caller, key_admin: Persona
) -> None:
    key: Key = world["payroll"]
    outsider = f"arn:aws:iam::{OTHER_ACCOUNT}:root"
    # The new policy drops the account's root statement for key_admin's own one, and opens Decrypt to another account.
    proposed = doc(
        {
            "Sid": "Admin",
            "Effect": "Allow",
            "Principal": {"AWS": key_admin.principal.arn},
            "Action": "kms:*",
            "Resource": "*",
        },
        {"Sid": "Partner", "Effect": "Allow", "Principal": {"AWS": outsider}, "Action": "kms:Decrypt", "Resource": "*"},
    )
    before_policy = Key.objects.get(pk=key.pk).policy
    result = services.policy_preview(caller=reader, proposal=Proposal("KeyPolicy", key_id=key.arn, policy=proposed))
    gains = {(g.principal, g.key_id): g.actions for g in result.gains}
    losses = {(g.principal, g.key_id): g.actions for g in result.losses}
    assert gains[(outsider, str(key.id))] == ("kms:Decrypt",)
    # The app held kms:* through the account's root statement and its identity policy: it loses it all.
    assert "kms:Encrypt" in losses[(world["app"].principal.arn, str(key.id))]
    assert (key_admin.principal.arn, str(key.id)) not in losses
    created = {(f.rule_id, f.resource_id) for f in result.created}
    assert ("kms-key-policy-no-public-access", key.arn) in created
    # Nothing saved, one audit event.
    assert Key.objects.get(pk=key.pk).policy == before_policy
    (event,) = AuditEvent.objects.filter(event_name="PreviewPolicyChange")
    assert event.request_parameters == {"changeType": "KeyPolicy", "keyId": key.arn}


def test_it_previews_the_findings_a_change_resolves(make_key: Callable[..., Key], reader: Caller) -> None:
    key = make_key(description="public")
    public = root_policy(
        key.account_id,
        {"Sid": "Everyone", "Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"},
    )
    Key.objects.filter(pk=key.pk).update(policy=public)
    proposal = Proposal("KeyPolicy", key_id=str(key.id), policy=root_policy(key.account_id))
    result = services.policy_preview(caller=reader, proposal=proposal)
    assert ("kms-key-policy-no-public-access", key.arn) in {(f.rule_id, f.resource_id) for f in result.resolved}
    losses = {g.principal: g.actions for g in result.losses}
    # Everyone loses Decrypt, and so does a principal of the account that only "*" let in.
    assert losses["*"] == ("kms:Decrypt",) and losses[reader.principal_arn] == ("kms:Decrypt",)


def test_it_previews_an_identity_policy_narrowed_to_the_generated_one(world: dict[str, Any], reader: Caller) -> None:
    app = world["app"]
    review = services.access_review_for(caller=reader, principal_arn=app.principal.arn)
    name = app.principal.inline_policies.get().name
    proposal = Proposal(
        "IdentityPolicy", policy_name=name, policy=review.generated_text, principal_arn=app.principal.arn
    )
    result = services.policy_preview(caller=reader, proposal=proposal)
    assert not result.gains
    losses = {g.key_id: g.actions for g in result.losses if g.principal == app.principal.arn}
    assert "kms:ScheduleKeyDeletion" in losses[str(world["payroll"].id)]
    assert "kms:Encrypt" not in losses[str(world["payroll"].id)]
    # What it used stays, under the encryption-context condition now.
    narrowed = {g.key_id: g.actions for g in result.narrowed}
    assert narrowed[str(world["payroll"].id)] == ("kms:Decrypt", "kms:Encrypt")
    # The grant still gives the spare key's Decrypt and Encrypt: not lost.
    assert "kms:Decrypt" not in losses[str(world["spare"].id)]
    # kms:Decrypt on all keys ends: the KMS.1 finding on the app resolves.
    assert ("iam-policy-blocked-kms-actions", app.principal.arn) in {
        (f.rule_id, f.resource_id) for f in result.resolved
    }


def test_it_previews_creating_and_revoking_a_grant(world: dict[str, Any], reader: Caller, make_persona: Any) -> None:
    nobody = make_persona("nobody", policy=None)
    ledger = world["ledger"]
    proposal = Proposal("CreateGrant", key_id=str(ledger.id), grantee=nobody.principal.arn, operations=("Decrypt",))
    result = services.policy_preview(caller=reader, proposal=proposal)
    assert [(g.principal, g.actions) for g in result.gains] == [(nobody.principal.arn, ("kms:Decrypt",))]
    revoke = Proposal("RevokeGrant", key_id=str(world["spare"].id), grant_id=world["grant"].grant_id)
    result = services.policy_preview(caller=reader, proposal=revoke)
    # The app keeps Decrypt through its identity policy: revoking the grant takes nothing away.
    assert not result.gains and not result.losses


def preview(caller: Caller, change_type: str, **fields: Any) -> Any:
    return services.policy_preview(caller=caller, proposal=Proposal(change_type, **fields))


@pytest.mark.parametrize(
    "policy",
    ["{not json", json.dumps({"Statement": [{"Effect": "Maybe", "Action": "kms:*", "Resource": "*"}]}), ""],
)
def test_it_refuses_a_malformed_policy_and_saves_nothing(world: dict[str, Any], reader: Caller, policy: str) -> None:
    key, app = world["payroll"], world["app"].principal
    with pytest.raises(MalformedPolicyDocument):
        preview(reader, "KeyPolicy", key_id=str(key.id), policy=policy)
    with pytest.raises(MalformedPolicyDocument):
        preview(reader, "IdentityPolicy", policy_name="x", policy=policy, principal_arn=app.arn)
    assert Key.objects.get(pk=key.pk).policy == key.policy
    assert not app.inline_policies.filter(name="x").exists()
    refused = AuditEvent.objects.filter(event_name="PreviewPolicyChange")
    assert [e.error_code for e in refused] == ["MalformedPolicyDocumentException"] * 2


def test_it_refuses_bad_references(world: dict[str, Any], reader: Caller, outsider: Persona) -> None:
    ledger, app = str(world["ledger"].id), world["app"].principal.arn
    with pytest.raises(NotFound):
        preview(reader, "KeyPolicy", key_id="not-a-key", policy=BROAD)
    with pytest.raises(NotFound):
        preview(reader, "KeyPolicy", key_id=outsider.principal.arn, policy=BROAD)
    with pytest.raises(NotFound):
        services.access_review_for(caller=reader, principal_arn=outsider.principal.arn)
    with pytest.raises(NotFound):
        preview(reader, "IdentityPolicy", policy_name="x", policy=BROAD, principal_arn=outsider.principal.arn)
    with pytest.raises(ValidationError):
        preview(reader, "CreateGrant", key_id=ledger, grantee=app, operations=("Fly",))
    with pytest.raises(InvalidArn):
        preview(reader, "CreateGrant", key_id=ledger, grantee=f"{app}-ghost", operations=("Decrypt",))
    with pytest.raises(NotFound):
        preview(reader, "RevokeGrant", key_id=ledger, grant_id="no-such-grant")
    with pytest.raises(ValidationError):
        preview(reader, "Everything", key_id=ledger)
    with pytest.raises(ValidationError):
        services.check_days("0")


def test_it_refuses_callers_without_describe_findings(world: dict[str, Any], make_persona: Any) -> None:
    nobody = make_persona("nobody", policy=None).caller()
    with pytest.raises(AccessDenied):
        services.access_review_for(caller=nobody, principal_arn=world["app"].principal.arn)
    with pytest.raises(AccessDenied):
        preview(nobody, "KeyPolicy", key_id=str(world["payroll"].id), policy=BROAD)
    with pytest.raises(AccessDenied):
        services.external_access_for(caller=nobody)
    refused = AuditEvent.objects.filter(event_name__in=["GetAccessReview", "PreviewPolicyChange", "ListExternalAccess"])
    assert {e.error_code for e in refused} == {"AccessDeniedException"} and refused.count() == 3


def test_it_lists_external_access_through_the_key_policy_and_grants(
    make_key: Callable[..., Key], key_admin: Persona, outsider: Persona, reader: Caller
) -> None:
    key = make_key(description="shared")
    partner = f"arn:aws:iam::{OTHER_ACCOUNT}:role/partner"
    policy = root_policy(
        key.account_id,
        {
            "Sid": "Partner",
            "Effect": "Allow",
            "Principal": {"AWS": partner},
            "Action": ["kms:Decrypt", "kms:DescribeKey"],
            "Resource": "*",
        },
    )
    key_services.key_put_policy(caller=key_admin.caller(), key=key, policy=policy)
    grant, _ = policy_services.grant_create(
        caller=key_admin.caller(),
        key=Key.objects.get(pk=key.pk),
        grantee_principal=outsider.principal.arn,
        operations=["Encrypt"],
    )
    found = {(e.principal, e.path): e for e in services.external_access_for(caller=reader)}
    by_policy = found[(partner, "key-policy")]
    assert (
        by_policy.actions == ("kms:Decrypt", "kms:DescribeKey") and by_policy.via == "key policy, statement 'Partner'"
    )
    by_grant = found[(outsider.principal.arn, "grant")]
    assert by_grant.actions == ("kms:Encrypt",) and by_grant.via == f"grant {grant.grant_id}"
    assert by_grant.key_id == str(key.id)


def test_it_tells_apart_principals_only_a_key_policy_or_a_grant_names() -> None:
    """Principals of one account with the same policies share answers, unless something names one of them."""
    from datetime import UTC, datetime

    from compliance.rules.facts import GrantFact, KeyFact, PrincipalFact, Snapshot

    now = datetime(2026, 4, 1, tzinfo=UTC)
    account = "111122223333"
    named, other, granted = (f"arn:aws:iam::{account}:user/{n}" for n in ("named", "other", "granted"))
    policy = root_policy(
        account, {"Sid": "Named", "Effect": "Allow", "Principal": {"AWS": named}, "Action": "kms:Sign", "Resource": "*"}
    )
    keys = tuple(
        KeyFact(
            f"0000000{i}-0000-4000-8000-000000000000",
            account,
            "us-east-1",
            "Enabled",
            "RSA_2048",
            "SIGN_VERIFY",
            "AWS_KMS",
            policy,
            now,
        )
        for i in range(3)
    )
    people = tuple(PrincipalFact(arn, account, "user", arn.rsplit("/", 1)[1]) for arn in (other, named, granted))
    grant = GrantFact("g1", keys[1].id, account, granted, ("Verify",), now)
    snapshot = Snapshot(now=now, keys=keys, principals=people, grants=(grant,))
    prober = analysis.Prober(snapshot)
    seen = {p.arn: analysis.allowed_map(prober, p) for p in people}
    assert seen[other] == {}
    assert {k: set(v) for k, v in seen[named].items()} == {k.id: {"kms:Sign"} for k in keys}
    assert seen[granted] == {keys[1].id: {"kms:Verify": "grant g1"}}


def test_it_previews_a_managed_policy_change_for_everyone_it_is_attached_to(
    world: dict[str, Any], reader: Caller, make_persona: Callable[..., Persona]
) -> None:
    system = Caller.system("tests", account_id=world["app"].principal.account_id)
    account = world["app"].principal.account
    managed = policy_services.identity_policy_put(caller=system, account=account, name="Readers", document=BROAD)
    holders = [make_persona(name, policy=None).principal for name in ("ann", "bob")]
    for holder in holders:
        policy_services.policy_attach(caller=system, principal=holder, policy=managed)
    narrower = doc({"Effect": "Allow", "Action": "kms:DescribeKey", "Resource": "*"})
    result = preview(reader, "IdentityPolicy", policy_name="Readers", policy=narrower)
    losers = {g.principal for g in result.losses}
    assert losers == {h.arn for h in holders}
    assert all("kms:DescribeKey" not in g.actions and "kms:Decrypt" in g.actions for g in result.losses)
    assert IdentityPolicy.objects.get(pk=managed.pk).document == BROAD


def test_it_generalizes_a_policy_too_large_for_the_limit_and_still_confirms_it() -> None:
    account = "111122223333"
    calls = [
        analysis.ObservedCall(
            "kms:Decrypt",
            f"arn:aws:kms:us-east-1:{account}:key/{i:08d}-0000-4000-8000-000000000000",
            account,
            f"{i:08d}-0000-4000-8000-000000000000",
            (("purpose", "billing"),),
        )
        for i in range(600)
    ]
    policy, note = analysis.generate_policy_noted(calls)
    assert note == analysis.GENERALIZED_KEYS
    (statement,) = policy["Statement"]
    assert statement["Resource"] == f"arn:aws:kms:us-east-1:{account}:key/*"
    assert statement["Condition"] == {"StringEquals": {"kms:EncryptionContext:purpose": "billing"}}
    assert len(json.dumps(policy, indent=2)) <= ev.MAX_POLICY_BYTES
    other_region = analysis.ObservedCall(
        "kms:Decrypt", f"arn:aws:kms:eu-west-1:{account}:key/x", account, "x", (("purpose", "billing"),)
    )
    assert not analysis.policy_allows(policy, other_region).allowed
    # A handful of keys are named one by one.
    small, note = analysis.generate_policy_noted(calls[:3])
    assert note == "" and len(small["Statement"][0]["Resource"]) == 3


def test_it_asks_each_key_a_resource_specific_policy_names() -> None:
    from datetime import UTC, datetime

    from compliance.rules.facts import KeyFact, PolicyFact, PrincipalFact, Snapshot

    now = datetime(2026, 4, 1, tzinfo=UTC)
    account = "111122223333"
    keys = tuple(
        KeyFact(
            f"0000000{i}-0000-4000-8000-000000000000",
            account,
            "us-east-1",
            "Enabled",
            "SYMMETRIC_DEFAULT",
            "ENCRYPT_DECRYPT",
            "AWS_KMS",
            root_policy(account),
            now,
        )
        for i in range(4)
    )
    narrow = PolicyFact("one", doc({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": keys[2].arn}), "inline")
    people = tuple(PrincipalFact(f"arn:aws:iam::{account}:user/{n}", account, "user", n, (narrow,)) for n in ("a", "b"))
    prober = analysis.Prober(Snapshot(now=now, keys=keys, principals=people))
    for person in people:
        assert analysis.allowed_map(prober, person) == {
            keys[2].id: {"kms:Decrypt": "identity policy one, statement #1"}
        }
