"""kmsweb's own REST API for compliance: ``GET /api/v1/findings``,
``GET /api/v1/principals/<arn>/access-review`` and ``POST /api/v1/policy-previews``, SigV4-signed.

Signed like the KMS API and the grant-request API (same access keys,
credential scope service ``kms``, method and path in the signature), and
authorized through the same model: the caller's identity policies must allow
``kmsweb:DescribeFindings`` (all three endpoints). Findings' query parameters: ``RuleId``, ``Severity``,
``Status`` (default: every status), ``KeyId`` (id or ARN), ``PrincipalArn``,
``MaxResults`` (1-100, default 50) and ``NextToken`` (from the previous
page). Malformed values are a ``ValidationException``; every refusal is
audited once.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt

from compliance.models import Finding, FindingStatus
from compliance.review.services import (
    CHANGE_TYPES,
    DEFAULT_DAYS,
    Proposal,
    access_review_for,
    check_days,
    policy_preview,
    preview_body,
    review_body,
)
from compliance.rules import RULES, Severity
from compliance.selectors import FindingFilter, finding_page_for
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import SerializationError, ValidationError
from kmsweb.lib.jsonbody import parse_body
from kmsweb.lib.public_url import public_url
from policies.api import serve_signed
from policies.selectors import principal_for_arn

_MEMBERS = {"RuleId", "Severity", "Status", "KeyId", "PrincipalArn", "MaxResults", "NextToken"}


def _iso(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def finding_body(f: Finding) -> dict[str, Any]:
    """The JSON form of a finding."""
    rule = RULES.get(f.rule_id)
    return {
        "FindingId": f.pk,
        "RuleId": f.rule_id,
        "Title": rule.title if rule else f.rule_id,
        "Severity": f.severity,
        "Status": f.status,
        "ResourceType": f.resource_kind,
        "ResourceId": f.resource_id,
        "KeyId": f.key_id or None,
        "PrincipalArn": f.principal_arn or None,
        "Frameworks": [{"Framework": n, "Control": c} for n, c in rule.frameworks] if rule else [],
        "FirstSeen": _iso(f.first_seen_at),
        "LastSeen": _iso(getattr(f, "seen_at", f.last_seen_at)),
        "ResolvedAt": _iso(f.resolved_at),
        "Evidence": f.evidence,
        "Remediation": f.remediation,
        "Suppression": {
            "Until": _iso(f.suppressed_until),
            "By": f.suppressed_by,
            "Justification": f.suppression_justification,
        }
        if f.status == FindingStatus.SUPPRESSED
        else None,
        "Links": {"Dashboard": public_url(reverse("compliance:finding_detail", args=[f.pk]))},
    }


def _parse(params: Any) -> FindingFilter:
    unknown = sorted(set(params) - _MEMBERS)
    if unknown:
        raise ValidationError(f"Unknown parameter(s): {', '.join(unknown)}.")
    rule = params.get("RuleId", "")
    if rule and rule not in RULES:
        raise ValidationError(f"RuleId '{rule[:64]}' is not a compliance rule.")
    severity = params.get("Severity", "")
    if severity and severity not in Severity.__members__:
        raise ValidationError("Severity must be one of LOW, MEDIUM, HIGH, CRITICAL.")
    status = params.get("Status", "") or "any"
    if status != "any" and status not in FindingStatus.values:
        raise ValidationError("Status must be one of " + ", ".join(FindingStatus.values) + ".")
    try:
        size = int(params.get("MaxResults", "50"))
        page = int(params.get("NextToken", "1"))
    except ValueError:
        raise ValidationError("MaxResults and NextToken must be integers.") from None
    if not 1 <= size <= 100:
        raise ValidationError("MaxResults must be between 1 and 100.")
    if page < 1:
        raise ValidationError("NextToken is not valid.")
    for member in ("KeyId", "PrincipalArn"):
        value = params.get(member, "")
        if "\x00" in value or len(value) > 2048:
            raise ValidationError(f"{member} is not valid.")
    # The dashboard's page sizes are fixed; the API's are any size up to 100.
    return FindingFilter(
        rule=rule,
        severity=severity,
        status=status,
        key=params.get("KeyId", "").strip(),
        principal=params.get("PrincipalArn", "").strip(),
        page=page,
        per_page=size,
    )


@csrf_exempt
@login_not_required
def findings(request: HttpRequest) -> HttpResponse:
    """GET: one page of the caller's account's findings, most severe first."""

    def list_findings(caller: Caller) -> tuple[int, dict[str, Any]]:
        flt = _parse(request.GET)
        page = finding_page_for(caller=caller, flt=flt)
        body: dict[str, Any] = {"Findings": [finding_body(f) for f in page.rows], "Total": page.total}
        if page.next and flt.page == page.page:
            body["NextToken"] = str(page.next)
        return 200, body

    return serve_signed(request, "ListFindings", "GET", list_findings)


_PREVIEW_MEMBERS = {
    "ChangeType",
    "KeyId",
    "Policy",
    "PolicyName",
    "PrincipalArn",
    "GranteePrincipal",
    "Operations",
    "Constraints",
    "GrantId",
}
_CONSTRAINT_MEMBERS = {"EncryptionContextSubset", "EncryptionContextEquals"}


def _member(body: dict[str, Any], name: str, max_length: int = 2048) -> str:
    value = body.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string.")
    if len(value) > max_length:
        raise ValidationError(f"{name} must be at most {max_length} characters long.")
    if "\x00" in value:
        raise ValidationError(f"{name} must not contain the NUL character (U+0000).")
    return value


def _parse_preview(raw: bytes) -> Proposal:
    """The body of ``POST /api/v1/policy-previews``, checked for shape; the service checks meaning."""
    body = parse_body(raw, not_json="The body is not valid JSON.")
    if not isinstance(body, dict):
        raise SerializationError("The body must be a JSON object.")
    unknown = sorted(set(body) - _PREVIEW_MEMBERS)
    if unknown:
        raise ValidationError(f"Unknown member(s): {', '.join(unknown)}.")
    change_type = _member(body, "ChangeType", 32)
    if change_type not in CHANGE_TYPES:
        raise ValidationError(f"ChangeType must be one of {', '.join(CHANGE_TYPES)}.")
    operations = body.get("Operations") or []
    if not isinstance(operations, list) or not all(isinstance(o, str) for o in operations) or len(operations) > 20:
        raise ValidationError("Operations must be a list of at most 20 operation names.")
    constraints = body.get("Constraints")
    if constraints is not None and (
        not isinstance(constraints, dict)
        or set(constraints) - _CONSTRAINT_MEMBERS
        or not all(
            isinstance(v, dict) and all(isinstance(a, str) and isinstance(b, str) for a, b in v.items())
            for v in constraints.values()
        )
    ):
        raise ValidationError(
            "Constraints may hold EncryptionContextSubset or EncryptionContextEquals, objects of strings."
        )
    return Proposal(
        change_type=change_type,
        key_id=_member(body, "KeyId"),
        policy=_member(body, "Policy", 32 * 1024 + 1),
        policy_name=_member(body, "PolicyName", 128),
        principal_arn=_member(body, "PrincipalArn"),
        grantee=_member(body, "GranteePrincipal", 256),
        operations=tuple(operations),
        constraints=constraints,
        grant_id=_member(body, "GrantId", 128),
    )


@csrf_exempt
@login_not_required
def policy_previews(request: HttpRequest) -> HttpResponse:
    """POST: what a key policy, identity policy or grant change would do; nothing is saved."""

    def preview(caller: Caller) -> tuple[int, dict[str, Any]]:
        proposal = _parse_preview(request.body)
        return 200, preview_body(policy_preview(caller=caller, proposal=proposal))

    return serve_signed(request, "PreviewPolicyChange", "POST", preview)


@csrf_exempt
@login_not_required
def access_review(request: HttpRequest, arn: str) -> HttpResponse:
    """GET: a principal's allowed against used access (``Days``, default 90) and its generated policy."""

    def review(caller: Caller) -> tuple[int, dict[str, Any]]:
        unknown = sorted(set(request.GET) - {"Days"})
        if unknown:
            raise ValidationError(f"Unknown parameter(s): {', '.join(unknown)}.")
        days = check_days(request.GET.get("Days", DEFAULT_DAYS))
        if "\x00" in arn or len(arn) > 2048:
            raise ValidationError("The principal ARN is not valid.")
        found = access_review_for(caller=caller, principal_arn=arn, days=days)
        body = review_body(found)
        principal = principal_for_arn(found.principal.arn)
        if principal is not None:
            body["Links"] = {"Dashboard": public_url(reverse("compliance:access_review", args=[principal.pk]))}
        return 200, body

    return serve_signed(request, "GetAccessReview", "GET", review)
