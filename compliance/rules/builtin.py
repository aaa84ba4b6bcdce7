"""The built-in compliance rules: pure functions over a ``Snapshot``.

Each yields a ``Result`` for every resource in its scope, compliant or not;
the evidence names the fact (statement, grant, date, event) behind a
non-compliant verdict. Everything "may X do Y" is asked of the policy engine
through ``compliance.rules.access``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from compliance.rules.access import (
    ALLOW_ALL,
    ANYONE,
    Access,
    account_of,
    external_candidates,
    parsed_identity,
    parsed_key_policy,
    statement_evidence,
)
from compliance.rules.base import Result, rule
from compliance.rules.facts import KeyFact, PrincipalFact, ResourceKind, Severity, Snapshot
from policies import evaluation as ev
from policies.evaluation.policy import service_name

ENABLED = "Enabled"
PENDING_DELETION = "PendingDeletion"
# NIST SP 800-57 Part 1 Rev. 5, table 1: the originator-usage period of a
# symmetric data-encryption key is up to 2 years; a private signature key's
# cryptoperiod is 1 to 3 years. kmsweb takes the upper bounds.
CRYPTOPERIOD_DAYS = {"ENCRYPT_DECRYPT": 730, "GENERATE_VERIFY_MAC": 730, "KEY_AGREEMENT": 730, "SIGN_VERIFY": 1095}
RECENT_USE_DAYS = 30
EXPIRY_WARNING_DAYS = 30
# Actions that change who controls a key, and those that use it.
ADMIN_ACTIONS = ("kms:PutKeyPolicy", "kms:ScheduleKeyDeletion")
MANAGE_ACTIONS = ("kms:CreateKey", "kms:PutKeyPolicy", "kms:ScheduleKeyDeletion", "kms:DisableKey")
PUBLIC_PROBE_ACTIONS = (
    "kms:Decrypt",
    "kms:Encrypt",
    "kms:GenerateDataKey",
    "kms:ReEncryptFrom",
    "kms:Sign",
    "kms:CreateGrant",
    "kms:PutKeyPolicy",
)
BLOCKED_ACTIONS = ("kms:Decrypt", "kms:ReEncryptFrom")
# A key no policy names, in a region no policy names: a policy that allows
# it allows every key (Resource "*" or a wildcard ARN).
ANY_KEY_ID = "00000000-0000-0000-0000-000000000000"
PROBE_REGION = "zz-probe-1"


def any_key_arn(account_id: str) -> str:
    return f"arn:aws:kms:{PROBE_REGION}:{account_id}:key/{ANY_KEY_ID}"


def _iso(value: object) -> object:
    return value.isoformat() if hasattr(value, "isoformat") else value


def _key_result(key: KeyFact, compliant: bool, **evidence: object) -> Result:
    return Result(
        resource_id=key.arn,
        account_id=key.account_id,
        compliant=compliant,
        evidence={k: _iso(v) for k, v in evidence.items()} if not compliant else {},
        key_id=key.id,
    )


def _key_finding(key: KeyFact, found: dict[str, object] | None) -> Result:
    """A key's result for a rule that looks for an offending principal: non-compliant when one was ``found``
    (its evidence, with the principal in ``principal``)."""
    return Result(
        resource_id=key.arn,
        account_id=key.account_id,
        compliant=found is None,
        evidence=found or {},
        key_id=key.id,
        principal_arn=str(found["principal"]) if found else "",
    )


def _access(snapshot: Snapshot) -> Access:
    # One memo per snapshot, shared by the rules of a run.
    memo = snapshot.__dict__.get("_access")
    if memo is None:
        memo = snapshot.__dict__["_access"] = Access(snapshot.now)
    return memo


@rule(
    id="kms-rotation-enabled",
    title="Automatic rotation is enabled on enabled symmetric customer managed keys",
    severity=Severity.MEDIUM,
    resource_kind=ResourceKind.KEY,
    frameworks=(
        ("Security Hub", "KMS.4"),
        ("AWS Config", "cmk-backing-key-rotation-enabled"),
        ("CIS", "3.6"),
        ("PCI DSS", "3.7.4"),
    ),
    remediation="Turn on automatic rotation for the key (EnableKeyRotation, or Key rotation on the key's page).",
)
def rotation_enabled(snapshot: Snapshot) -> Iterator[Result]:
    for key in snapshot.keys:
        # Imported material cannot rotate automatically (AWS: UnsupportedOperation).
        if key.state != ENABLED or key.key_spec != "SYMMETRIC_DEFAULT" or key.origin != "AWS_KMS":
            continue
        yield _key_result(key, key.rotation_enabled, rotationEnabled=False, keySpec=key.key_spec)


@rule(
    id="kms-rotation-cryptoperiod",
    title="Key material is rotated within the NIST SP 800-57 cryptoperiod for its use",
    severity=Severity.LOW,
    resource_kind=ResourceKind.KEY,
    frameworks=(("NIST SP 800-57", "Part 1 5.3.6"), ("PCI DSS", "3.6.4")),
    remediation="Set a rotation period within the cryptoperiod (at most 730 days for encryption and MAC keys), "
    "or replace a signing key older than 3 years with a new key.",
)
def rotation_cryptoperiod(snapshot: Snapshot) -> Iterator[Result]:
    for key in snapshot.keys:
        if key.state not in (ENABLED, "Disabled"):
            continue
        limit = CRYPTOPERIOD_DAYS.get(key.key_usage, 730)
        since = key.last_rotated_at or key.created_at
        age_days = (snapshot.now - since).days
        period = key.rotation_period_days if key.rotation_enabled else None
        compliant = age_days <= limit and (period is None or period <= limit)
        yield _key_result(
            key,
            compliant,
            keyUsage=key.key_usage,
            cryptoperiodDays=limit,
            materialAgeDays=age_days,
            materialSince=since,
            rotationPeriodDays=period,
        )


@rule(
    id="kms-key-not-pending-deletion",
    title="Customer managed keys are not scheduled for deletion",
    severity=Severity.HIGH,
    resource_kind=ResourceKind.KEY,
    frameworks=(("Security Hub", "KMS.3"), ("AWS Config", "kms-cmk-not-scheduled-for-deletion")),
    remediation="If the key is still needed, cancel its deletion (CancelKeyDeletion). A key used in the last "
    "30 days still protects data that will become unreadable.",
)
def not_pending_deletion(snapshot: Snapshot) -> Iterator[Result]:
    recent = snapshot.now - timedelta(days=RECENT_USE_DAYS)
    for key in snapshot.keys:
        pending = key.state in (PENDING_DELETION, "PendingReplicaDeletion")
        last_used = snapshot.key_last_used.get(key.id)
        used = last_used is not None and last_used >= recent
        result = _key_result(
            key, not pending, deletionDate=key.deletion_date, lastUsed=last_used, usedInLast30Days=used
        )
        if pending and used:
            # Still in use: deleting it makes data unrecoverable.
            result = Result(**{**result.__dict__, "severity": Severity.CRITICAL})
        yield result


@rule(
    id="kms-key-policy-no-public-access",
    title="Key policies do not allow everyone or another account without conditions",
    severity=Severity.CRITICAL,
    resource_kind=ResourceKind.KEY,
    frameworks=(
        ("Security Hub", "KMS.5"),
        ("AWS Config", "kms-key-policy-no-public-access"),
        ("CIS", "v7 2.21"),
    ),
    remediation="Remove the statement, name the principals that need the key, or add conditions "
    "(aws:PrincipalOrgID, kms:CallerAccount, kms:ViaService) that restrict it.",
)
def no_public_access(snapshot: Snapshot) -> Iterator[Result]:
    access = _access(snapshot)
    everything = parsed_identity((ALLOW_ALL,))
    for key in snapshot.keys:
        found: dict[str, object] | None = None
        for arn, account in external_candidates(key).items():
            for action in PUBLIC_PROBE_ACTIONS:
                # The outside principal's own account lets it do anything: only
                # the key policy stands between it and the key.
                decision = access.decide(
                    principal_arn=arn, principal_account=account, identity=everything, action=action, key=key
                )
                if decision.allowed and decision.reason == "key-policy":
                    found = {"principal": "*" if arn == ANYONE else arn, "action": action}
                    found.update(statement_evidence(decision, key))
                    break
            if found:
                break
        yield _key_result(key, found is None, **(found or {}))


@rule(
    id="kms-grant-external-principal",
    title="Grants are given to principals of the key's own account",
    severity=Severity.HIGH,
    resource_kind=ResourceKind.GRANT,
    frameworks=(("PCI DSS", "7.2.2"),),
    remediation="Revoke the grant (RevokeGrant) unless the other account's access is intended and documented.",
)
def grant_external(snapshot: Snapshot) -> Iterator[Result]:
    for grant in snapshot.grants:
        account = account_of(grant.grantee_principal)
        # A service principal name ("logs.amazonaws.com") belongs to no account.
        external = account is not None and account != grant.key_account_id
        yield Result(
            resource_id=grant.grant_id,
            account_id=grant.key_account_id,
            compliant=not external,
            evidence={}
            if not external
            else {
                "grantId": grant.grant_id,
                "granteePrincipal": grant.grantee_principal,
                "granteeAccount": account,
                "operations": list(grant.operations),
                "createdAt": grant.created_at.isoformat(),
            },
            key_id=grant.key_id,
            principal_arn=grant.grantee_principal,
        )


def _principal_result(p: PrincipalFact, compliant: bool, evidence: dict[str, object]) -> Result:
    return Result(
        resource_id=p.arn,
        account_id=p.account_id,
        compliant=compliant,
        evidence={} if compliant else evidence,
        principal_arn=p.arn,
    )


@rule(
    id="iam-policy-blocked-kms-actions",
    title="Identity policies do not allow kms:Decrypt or kms:ReEncryptFrom on all keys",
    severity=Severity.HIGH,
    resource_kind=ResourceKind.PRINCIPAL,
    frameworks=(
        ("Security Hub", "KMS.1"),
        ("Security Hub", "KMS.2"),
        ("AWS Config", "iam-customer-policy-blocked-kms-actions"),
    ),
    remediation="Narrow the policy's Resource to the key ARNs the principal needs, or move the permission "
    "into those keys' policies or grants.",
)
def blocked_kms_actions(snapshot: Snapshot) -> Iterator[Result]:
    access = _access(snapshot)
    for p in snapshot.principals:
        found: dict[str, object] | None = None
        # Dashboard roles are kmsweb's own; the rule judges customer policies.
        for fact in (f for f in p.policies if f.kind != "role"):
            identity = parsed_identity((fact,))
            if not identity:
                continue
            for action in BLOCKED_ACTIONS:
                decision = access.decide(
                    principal_arn=p.arn,
                    principal_account=p.account_id,
                    identity=identity,
                    action=action,
                    key=None,
                    resource_arn=any_key_arn(p.account_id),
                )
                if decision.allowed:
                    found = {"policy": fact.name, "policyKind": fact.kind, "action": action}
                    found.update(statement_evidence(decision))
                    break
            if found:
                break
        yield _principal_result(p, found is None, found or {})


def _is_admin(snapshot: Snapshot, arn: str) -> bool:
    if arn.endswith(":root"):
        return True
    p = snapshot.principals_by_arn.get(arn)
    return p is not None and any(role in snapshot.settings.admin_roles for role in p.roles)


def _identity_of(snapshot: Snapshot, arn: str) -> tuple[object, ...]:
    p = snapshot.principals_by_arn.get(arn)
    return parsed_identity(p.policies) if p is not None else ()


@rule(
    id="kms-key-policy-admin-only",
    title="Only key administrators may change a key's policy",
    severity=Severity.HIGH,
    resource_kind=ResourceKind.KEY,
    frameworks=(("PCI DSS", "3.6.1.2"), ("NIST SP 800-57", "Part 2 key management roles")),
    remediation="Remove kms:PutKeyPolicy and kms:* from the statements that name this principal, or give the "
    "principal the key administrator role if it is one.",
)
def admin_only(snapshot: Snapshot) -> Iterator[Result]:
    access = _access(snapshot)
    for key in snapshot.keys:
        policy = parsed_key_policy(key)
        named: set[str] = set()
        for st in policy.statements if policy is not None else ():
            if not st.deny and st.principal is not None and not st.not_principal:
                named |= {a for a in st.principal.arns if account_of(a) == key.account_id}
        found = None
        for arn in sorted(named):
            if _is_admin(snapshot, arn):
                continue
            decision = access.decide(
                principal_arn=arn,
                principal_account=key.account_id,
                identity=_identity_of(snapshot, arn),  # type: ignore[arg-type]
                action="kms:PutKeyPolicy",
                key=key,
            )
            if decision.allowed and decision.reason == "key-policy":
                found = {"principal": arn, "action": "kms:PutKeyPolicy", **statement_evidence(decision, key)}
                break
        yield _key_finding(key, found)


@rule(
    id="kms-separation-of-duties",
    title="No principal both administers and uses a key",
    severity=Severity.MEDIUM,
    resource_kind=ResourceKind.KEY,
    frameworks=(("PCI DSS", "3.6.1"), ("NIST SP 800-57", "Part 2 separation of duties")),
    remediation="Split the duties: keep kms:PutKeyPolicy and kms:ScheduleKeyDeletion for administrators and "
    "let a different principal use the key for cryptography.",
)
def separation_of_duties(snapshot: Snapshot) -> Iterator[Result]:
    access = _access(snapshot)
    for key in snapshot.keys:
        found: dict[str, object] | None = None
        # Users are those the audit trail saw use the key; administering is what the engine allows.
        for arn, used_at in sorted(snapshot.key_users.get(key.id, {}).items()):
            account = account_of(arn)
            if account is None:
                continue
            for action in ADMIN_ACTIONS:
                decision = access.decide(
                    principal_arn=arn,
                    principal_account=account,
                    identity=_identity_of(snapshot, arn),  # type: ignore[arg-type]
                    action=action,
                    key=key,
                )
                if decision.allowed:
                    found = {"principal": arn, "lastUsed": used_at.isoformat(), "mayAlso": action}
                    found.update(statement_evidence(decision, key))
                    break
            if found:
                break
        yield _key_finding(key, found)


@rule(
    id="kms-key-unused",
    title="Enabled keys are used (not idle for the configured number of days)",
    severity=Severity.LOW,
    resource_kind=ResourceKind.KEY,
    frameworks=(("NIST SP 800-57", "Part 1 8.3 key deactivation"),),
    remediation="Disable the key, then schedule its deletion once nothing needs it.",
)
def key_unused(snapshot: Snapshot) -> Iterator[Result]:
    days = snapshot.settings.unused_key_days
    since = snapshot.now - timedelta(days=days)
    for key in snapshot.keys:
        if key.state != ENABLED or key.created_at > since:
            continue
        last = snapshot.key_last_used.get(key.id)
        yield _key_result(key, last is not None and last >= since, unusedDays=days, lastUsedInWindow=last)


@rule(
    id="kms-grant-unused",
    title="Grants are used (not idle for the configured number of days)",
    severity=Severity.LOW,
    resource_kind=ResourceKind.GRANT,
    frameworks=(("PCI DSS", "7.2.4"),),
    remediation="Revoke or retire the grant (RevokeGrant, RetireGrant).",
)
def grant_unused(snapshot: Snapshot) -> Iterator[Result]:
    days = snapshot.settings.unused_grant_days
    since = snapshot.now - timedelta(days=days)
    for grant in snapshot.grants:
        if grant.created_at > since:
            continue
        grantee = grant.grantee_principal
        if not grantee.startswith("arn:"):
            # A grant to a service name is used by kmsweb's service principal of that name.
            grantee = f"arn:aws:iam::{grant.key_account_id}:service/{service_name(grantee)}"
        used = [
            at
            for op in grant.operations
            if (at := snapshot.usage.get((grant.key_id, grantee, op))) is not None and at >= since
        ]
        yield Result(
            resource_id=grant.grant_id,
            account_id=grant.key_account_id,
            compliant=bool(used),
            evidence={}
            if used
            else {
                "grantId": grant.grant_id,
                "granteePrincipal": grant.grantee_principal,
                "operations": list(grant.operations),
                "unusedDays": days,
            },
            key_id=grant.key_id,
            principal_arn=grant.grantee_principal,
        )


@rule(
    id="iam-access-key-rotated",
    title="Access keys are used and younger than the configured age",
    severity=Severity.MEDIUM,
    resource_kind=ResourceKind.ACCESS_KEY,
    frameworks=(("CIS", "1.12"), ("CIS", "1.14"), ("PCI DSS", "8.3.9")),
    remediation="Create a new access key, move the application to it, then deactivate and delete the old one.",
)
def access_key_rotated(snapshot: Snapshot) -> Iterator[Result]:
    days = snapshot.settings.access_key_max_days
    limit = snapshot.now - timedelta(days=days)
    for ak in snapshot.access_keys:
        too_old = ak.created_at < limit
        idle = (ak.last_used_at or ak.created_at) < limit
        yield Result(
            resource_id=ak.access_key_id,
            account_id=ak.account_id,
            compliant=not (too_old or idle),
            evidence={}
            if not (too_old or idle)
            else {
                "accessKeyId": ak.access_key_id,
                "createdAt": ak.created_at.isoformat(),
                "lastUsedAt": _iso(ak.last_used_at),
                "olderThanDays": days if too_old else None,
                "unusedForDays": days if idle else None,
            },
            principal_arn=ak.principal_arn,
        )


@rule(
    id="iam-key-managers-have-mfa",
    title="Users who may manage keys have an MFA device",
    severity=Severity.HIGH,
    resource_kind=ResourceKind.PRINCIPAL,
    frameworks=(("CIS", "1.10"), ("PCI DSS", "8.4.2")),
    remediation="Have the user enrol a TOTP device (the dashboard asks at sign-in), or remove the key "
    "management permissions from the user's policies.",
)
def key_managers_mfa(snapshot: Snapshot) -> Iterator[Result]:
    access = _access(snapshot)
    for p in snapshot.principals:
        if p.type != "user":
            continue
        identity = parsed_identity(p.policies)
        found = None
        for action in MANAGE_ACTIONS:
            decision = access.decide(
                principal_arn=p.arn,
                principal_account=p.account_id,
                identity=identity,
                action=action,
                key=None,
                resource_arn=any_key_arn(p.account_id),
            )
            if decision.allowed:
                found = {"action": action, "hasDashboardUser": p.has_user, **statement_evidence(decision)}
                break
        yield _principal_result(p, found is None or p.has_mfa_device, found or {})


@rule(
    id="kms-imported-material-expiry",
    title="Imported key material does not expire within 30 days",
    severity=Severity.HIGH,
    resource_kind=ResourceKind.KEY,
    frameworks=(("NIST SP 800-57", "Part 1 5.3"), ("PCI DSS", "3.7.4")),
    remediation="Re-import the key material with a later ValidTo (or KEY_MATERIAL_DOES_NOT_EXPIRE) before it "
    "expires: the key becomes unusable at expiry.",
)
def imported_expiry(snapshot: Snapshot) -> Iterator[Result]:
    horizon = snapshot.now + timedelta(days=EXPIRY_WARNING_DAYS)
    for key in snapshot.keys:
        if key.origin != "EXTERNAL" or key.valid_to is None:
            continue
        yield _key_result(key, key.valid_to > horizon, validTo=key.valid_to, warningDays=EXPIRY_WARNING_DAYS)


@rule(
    id="kms-key-required-tags",
    title="Keys carry the tags the account requires",
    severity=Severity.LOW,
    resource_kind=ResourceKind.KEY,
    frameworks=(("AWS Config", "required-tags"),),
    remediation="Tag the key (TagResource, or Tags on the key's page) with the missing tag keys.",
)
def required_tags(snapshot: Snapshot) -> Iterator[Result]:
    required = snapshot.settings.required_tags
    if not required:
        return
    for key in snapshot.keys:
        missing = [t for t in required if not key.tags.get(t)]
        yield _key_result(key, not missing, missingTags=missing, requiredTags=list(required))


# The key policy template of docs/STS.md (keys.services.common.mfa_key_policy)
# requires a second factor, under an hour old, for these; a test keeps the lists equal.
MFA_PROTECTED_ACTIONS = ("kms:ScheduleKeyDeletion", "kms:DisableKey", "kms:PutKeyPolicy", "kms:CreateGrant")
MFA_MAX_AGE_SECONDS = 3600


@rule(
    id="kms-destructive-actions-require-mfa",
    title="Deleting, disabling, re-policying and granting a key need a recent second factor",
    severity=Severity.MEDIUM,
    resource_kind=ResourceKind.KEY,
    frameworks=(("PCI DSS", "8.4.2"),),
    remediation="Add the Deny statements of docs/STS.md's key policy template: deny ScheduleKeyDeletion, "
    "DisableKey, PutKeyPolicy and CreateGrant when aws:MultiFactorAuthPresent is false (BoolIfExists) or "
    "aws:MultiFactorAuthAge is over 3600 seconds.",
)
def destructive_actions_require_mfa(snapshot: Snapshot) -> Iterator[Result]:
    everything = parsed_identity((ALLOW_ALL,))
    for key in snapshot.keys:
        if key.state not in (ENABLED, "Disabled"):
            continue
        policy = parsed_key_policy(key)
        # Whoever the key policy lets in: a principal of the key's account
        # (through :root) and every principal it names, each with an identity
        # policy that allows everything, asking without a second factor and
        # with one that is two hours old.
        probes = {f"arn:aws:iam::{key.account_id}:user/mfa-probe": key.account_id}
        for st in policy.statements if policy is not None else ():
            if not st.deny and st.principal is not None:
                for arn in st.principal.arns:
                    probes.setdefault(arn, account_of(arn) or key.account_id)
        found: dict[str, object] | None = None
        for arn, account in probes.items():
            for action in MFA_PROTECTED_ACTIONS:
                for mfa in (
                    {"aws:MultiFactorAuthPresent": False},
                    {"aws:MultiFactorAuthPresent": True, "aws:MultiFactorAuthAge": 2 * MFA_MAX_AGE_SECONDS},
                ):
                    ctx = ev.RequestContext(
                        action=action,
                        principal_arn=arn,
                        principal_account=account,
                        resource_arn=key.arn,
                        resource_account=key.account_id,
                        now=snapshot.now,
                        keys={**mfa, "aws:SecureTransport": True, "kms:KeySpec": key.key_spec},
                    )
                    decision = ev.evaluate(ctx, policy, everything)
                    if decision.allowed:
                        found = {
                            "principal": arn,
                            "action": action,
                            "mfa": "absent" if not mfa["aws:MultiFactorAuthPresent"] else "two hours old",
                        }
                        found.update(statement_evidence(decision, key))
                        break
                if found:
                    break
            if found:
                break
        yield _key_result(key, found is None, **(found or {}))
