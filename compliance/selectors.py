"""Reading findings and scores for a caller: the dashboard and the REST API share these.

Every reader needs ``kmsweb:DescribeFindings`` (all dashboard roles have it;
API principals through their identity policies) and sees its own account's
findings only. ``FindingFilter`` is the one filter set of the findings table
and of ``GET /api/v1/findings``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from django.db.models import Case, Count, IntegerField, QuerySet, Value, When
from django.http import QueryDict

from audit.services import audited
from compliance.models import (
    SEVERITY_ORDER,
    Campaign,
    CampaignItem,
    EvaluationRun,
    Finding,
    FindingChange,
    FindingStatus,
    ItemStatus,
    OpenFindingsCount,
)
from compliance.rules import FRAMEWORKS, RULES, Severity
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import NotFound
from policies.authorization import authorize

READ_ACTION = "kmsweb:DescribeFindings"
EVENT_SOURCE = "kmsweb.compliance"
PAGE_SIZES = (25, 50, 100)
MAX_API_PAGE = 100


@dataclass(frozen=True)
class FindingFilter:
    """The findings table's state: filters and page (the URL is the whole state)."""

    rule: str = ""
    severity: str = ""
    status: str = "NON_COMPLIANT"
    key: str = ""
    principal: str = ""
    page: int = 1
    per_page: int = 25

    @classmethod
    def from_query(cls, params: QueryDict | dict[str, str]) -> FindingFilter:
        """Read the query string; unknown values fall back to the defaults (``status=any`` shows all)."""
        rule = params.get("rule", "") or ""
        severity = params.get("severity", "") or ""
        status = params.get("status", "NON_COMPLIANT") or ""
        try:
            page = max(1, int(params.get("page", "1") or 1))
        except ValueError:
            page = 1
        try:
            per_page = int(params.get("per_page", "25") or 25)
        except ValueError:
            per_page = 25
        return cls(
            rule=rule if rule in RULES else "",
            severity=severity if severity in Severity.__members__ else "",
            status=status if status in FindingStatus.values or status == "any" else "NON_COMPLIANT",
            key=(params.get("key", "") or "").replace("\x00", "").strip()[:64],
            principal=(params.get("principal", "") or "").replace("\x00", "").strip()[:256],
            page=min(page, 100000),
            per_page=per_page if per_page in PAGE_SIZES else 25,
        )

    def apply(self, qs: QuerySet[Finding]) -> QuerySet[Finding]:
        if self.rule:
            qs = qs.filter(rule_id=self.rule)
        if self.severity:
            qs = qs.filter(severity=self.severity)
        if self.status and self.status != "any":
            qs = qs.filter(status=self.status)
        if self.key:
            # A key id or the key's ARN (whose last part is the id).
            qs = qs.filter(key_id=self.key.rsplit("/", 1)[-1])
        if self.principal:
            qs = qs.filter(principal_arn=self.principal)
        return qs

    def query(self, **changes: Any) -> str:
        """The query string of this state with ``changes`` (defaults left out)."""
        state = replace(self, **changes)
        params = {
            name: value
            for name, value in (
                ("rule", state.rule),
                ("severity", state.severity),
                ("status", state.status),
                ("key", state.key),
                ("principal", state.principal),
                ("page", state.page if state.page != 1 else ""),
                ("per_page", state.per_page if state.per_page != 25 else ""),
            )
            if value not in ("", None)
        }
        return "?" + urlencode(params)


@dataclass
class FindingPage:
    rows: list[Finding]
    total: int
    page: int
    pages: int
    start: int
    end: int
    previous: int | None
    next: int | None


def _by_severity(qs: QuerySet[Finding]) -> QuerySet[Finding]:
    rank = Case(*(When(severity=s, then=Value(i)) for s, i in SEVERITY_ORDER.items()), output_field=IntegerField())
    return qs.annotate(severity_rank=rank).order_by("-severity_rank", "-first_seen_at", "-id")


def _with_seen(rows: list[Finding]) -> list[Finding]:
    """Attach ``seen_at`` and the rule: an active finding was last seen by the latest run (see ``Finding``)."""
    latest = EvaluationRun.objects.order_by("-started_at").values_list("started_at", flat=True).first()
    for f in rows:
        f.rule = RULES.get(f.rule_id)  # type: ignore[attr-defined]
        seen = f.last_seen_at
        if f.is_actionable and latest is not None and (seen is None or latest > seen):
            seen = latest
        f.seen_at = seen  # type: ignore[attr-defined]
    return rows


def _check(caller: Caller) -> None:
    authorize(caller=caller, action=READ_ACTION)


def findings_for(*, caller: Caller) -> QuerySet[Finding]:
    """The caller's account's findings (raises AccessDenied without ``kmsweb:DescribeFindings``)."""
    _check(caller)
    return Finding.objects.filter(account_id=caller.account_id)


def _read(caller: Caller, event_name: str, params: dict[str, Any]) -> Any:
    clean = {k: v for k, v in params.items() if v not in ("", None)}
    return audited(caller, event_name, request_parameters=clean, read_only=True, event_source=EVENT_SOURCE)


def finding_page_for(*, caller: Caller, flt: FindingFilter) -> FindingPage:
    """One page of the filtered findings, most severe and most recent first. Records ListFindings."""
    with _read(caller, "ListFindings", flt.__dict__):
        return _page(caller, flt)


def _page(caller: Caller, flt: FindingFilter) -> FindingPage:
    qs = flt.apply(findings_for(caller=caller))
    total = qs.count()
    pages = max(1, -(-total // flt.per_page))
    page = min(flt.page, pages)
    start = (page - 1) * flt.per_page
    rows = _with_seen(list(_by_severity(qs)[start : start + flt.per_page]))
    return FindingPage(
        rows=rows,
        total=total,
        page=page,
        pages=pages,
        start=start + 1 if total else 0,
        end=start + len(rows),
        previous=page - 1 if page > 1 else None,
        next=page + 1 if page < pages else None,
    )


def finding_get_for(*, caller: Caller, finding_id: int | str) -> Finding:
    """One finding of the caller's account; NotFound otherwise (no existence leak across accounts).

    Records DescribeFinding.
    """
    with _read(caller, "DescribeFinding", {"FindingId": str(finding_id)}):
        return _get(caller, finding_id)


def _get(caller: Caller, finding_id: int | str) -> Finding:
    try:
        pk = int(finding_id)
    except (TypeError, ValueError):
        raise NotFound(f"Finding '{finding_id}' does not exist.") from None
    finding = findings_for(caller=caller).filter(pk=pk).first()
    if finding is None:
        raise NotFound(f"Finding '{finding_id}' does not exist.")
    return _with_seen([finding])[0]


def finding_history(*, finding: Finding, limit: int = 100) -> list[FindingChange]:
    return list(FindingChange.objects.filter(finding=finding)[:limit])


def key_findings_for(*, caller: Caller, key_id: str) -> list[Finding]:
    """The key's open and suppressed findings (the key page's compliance panel). Records ListFindings."""
    with _read(caller, "ListFindings", {"KeyId": key_id}):
        return _key_findings(caller, key_id)


def principal_findings_for(*, caller: Caller, principal_arn: str) -> list[Finding]:
    """The principal's open and suppressed findings: its policies, access keys, and grants
    to it (the principal page's compliance panel). Records ListFindings."""
    with _read(caller, "ListFindings", {"PrincipalArn": principal_arn}):
        active = [FindingStatus.NON_COMPLIANT, FindingStatus.SUPPRESSED]
        qs = findings_for(caller=caller).filter(principal_arn=principal_arn, status__in=active)
        return _with_seen(list(_by_severity(qs)[:200]))


def _key_findings(caller: Caller, key_id: str) -> list[Finding]:
    active = [FindingStatus.NON_COMPLIANT, FindingStatus.SUPPRESSED]
    return _with_seen(list(_by_severity(findings_for(caller=caller).filter(key_id=key_id, status__in=active))))


@dataclass
class Score:
    """How many judged resources a rule (or a framework's rules) found compliant."""

    label: str
    compliant: int = 0
    non_compliant: int = 0
    suppressed: int = 0
    rule: Any = None
    controls: str = ""

    @property
    def total(self) -> int:
        return self.compliant + self.non_compliant + self.suppressed

    @property
    def percent(self) -> int | None:
        # Suppressed findings are accepted risks, not compliance.
        return round(100 * self.compliant / self.total) if self.total else None


def scores_for(*, caller: Caller) -> dict[str, Any]:
    """Per rule and per framework: compliant, non-compliant and suppressed resources; and the last run."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    rows = findings_for(caller=caller).values("rule_id", "status").annotate(n=Count("id")).order_by()
    for row in rows:
        counts[row["rule_id"]][row["status"]] += row["n"]
    by_rule = []
    frameworks = {name: Score(label=name) for name in FRAMEWORKS}
    for rule in RULES.values():
        c = counts.get(rule.id, {})
        score = Score(
            label=rule.title,
            compliant=c.get(FindingStatus.COMPLIANT, 0) + c.get(FindingStatus.RESOLVED, 0),
            non_compliant=c.get(FindingStatus.NON_COMPLIANT, 0),
            suppressed=c.get(FindingStatus.SUPPRESSED, 0),
            rule=rule,
        )
        by_rule.append(score)
        for name in {fw for fw, _ in rule.frameworks}:
            fw = frameworks[name]
            fw.compliant += score.compliant
            fw.non_compliant += score.non_compliant
            fw.suppressed += score.suppressed
    for name, fw in frameworks.items():
        fw.controls = ", ".join(
            sorted({control for rule in RULES.values() for n, control in rule.frameworks if n == name})
        )
    return {
        "rules": by_rule,
        "frameworks": list(frameworks.values()),
        "last_run": EvaluationRun.objects.order_by("-started_at").first(),
        "open": sum(s.non_compliant for s in by_rule),
    }


# -- Campaigns -----------------------------------------------------------------------------------------

CAMPAIGN_READ_ACTION = "kmsweb:DescribeCampaigns"


@dataclass
class Progress:
    """How far a campaign is: decided items over all items."""

    pending: int = 0
    confirmed: int = 0
    narrowed: int = 0
    revoked: int = 0

    @property
    def total(self) -> int:
        return self.pending + self.decided

    @property
    def decided(self) -> int:
        return self.confirmed + self.narrowed + self.revoked

    @property
    def percent(self) -> int:
        return round(100 * self.decided / self.total) if self.total else 100


def _progress_of(campaign_ids: list[int]) -> dict[int, Progress]:
    out: dict[int, Progress] = {pk: Progress() for pk in campaign_ids}
    rows = (
        CampaignItem.objects.filter(campaign_id__in=campaign_ids)
        .values_list("campaign_id", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    for pk, status, n in rows:
        setattr(out[pk], str(status).lower(), n)
    return out


def campaign_list_for(*, caller: Caller, limit: int = 100) -> list[Any]:
    """The caller's account's campaigns, newest first, each with ``progress``."""
    authorize(caller=caller, action=CAMPAIGN_READ_ACTION)
    campaigns = list(Campaign.objects.filter(account_id=caller.account_id)[:limit])
    progress = _progress_of([c.pk for c in campaigns])
    for c in campaigns:
        c.progress = progress[c.pk]  # type: ignore[attr-defined]
    return campaigns


def campaign_get_for(*, caller: Caller, campaign_id: int | str) -> Any:
    """One campaign of the caller's account, with ``progress``; NotFound otherwise."""
    authorize(caller=caller, action=CAMPAIGN_READ_ACTION)
    try:
        pk = int(campaign_id)
    except (TypeError, ValueError):
        raise NotFound(f"Campaign '{campaign_id}' does not exist.") from None
    campaign = Campaign.objects.filter(account_id=caller.account_id, pk=pk).first()
    if campaign is None:
        raise NotFound(f"Campaign '{campaign_id}' does not exist.")
    campaign.progress = _progress_of([campaign.pk])[campaign.pk]  # type: ignore[attr-defined]
    return campaign


def campaign_items_for(*, caller: Caller, campaign: Any, mine: bool = False, status: str = "") -> list[Any]:
    """A campaign's items; ``mine``: only those assigned to the caller by name."""
    qs = campaign.items.all()
    if status in ItemStatus.values:
        qs = qs.filter(status=status)
    items = list(qs)
    if mine:
        items = [i for i in items if caller.principal_arn in i.reviewers]
    return items


def campaign_item_get_for(*, caller: Caller, item_id: int | str) -> Any:
    """One campaign item of the caller's account; NotFound otherwise."""
    authorize(caller=caller, action=CAMPAIGN_READ_ACTION)
    try:
        pk = int(item_id)
    except (TypeError, ValueError):
        raise NotFound(f"Campaign item '{item_id}' does not exist.") from None
    found = CampaignItem.objects.select_related("campaign").filter(pk=pk, campaign__account_id=caller.account_id)
    item = found.first()
    if item is None:
        raise NotFound(f"Campaign item '{item_id}' does not exist.")
    return item


# -- The trend of open findings ----------------------------------------------------------------------

TREND_DAYS = 30


def open_findings_trend_for(*, caller: Caller, now: Any, days: int = TREND_DAYS) -> dict[str, Any]:
    """Open findings per day (the last evaluation of each day) by severity, for the trend chart.

    ``total`` is the newest point's open findings: the height of the chart's last column.
    """
    _check(caller)
    since = now - timedelta(days=days)
    per_day: dict[str, Any] = {}
    for row in OpenFindingsCount.objects.filter(account_id=caller.account_id, at__gt=since).order_by("at", "id"):
        per_day[row.at.date().isoformat()] = row
    labels = sorted(per_day)
    severities = [s.value for s in reversed(list(Severity))]
    datasets = [
        {
            "label": s.title(),
            "kind": f"severity-{s.lower()}",
            "data": [per_day[d].by_severity.get(s, 0) for d in labels],
        }
        for s in severities
    ]
    total = per_day[labels[-1]].total if labels else 0
    return {
        "labels": [f"{d}T00:00:00Z" for d in labels],
        "datasets": datasets,
        "total": total,
        "totalText": f"{total} open finding{'' if total == 1 else 's'} after the latest evaluation.",
        "range": "month",
    }
