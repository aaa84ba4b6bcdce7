"""kmsweb's own REST API for compliance findings: ``GET /api/v1/findings``, SigV4-signed.

Signed like the KMS API and the grant-request API (same access keys,
credential scope service ``kms``, method and path in the signature), and
authorized through the same model: the caller's identity policies must allow
``kmsweb:DescribeFindings``. Query parameters: ``RuleId``, ``Severity``,
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
from compliance.rules import RULES, Severity
from compliance.selectors import FindingFilter, finding_page_for
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import ValidationError
from kmsweb.lib.public_url import public_url
from policies.api import serve_signed

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
