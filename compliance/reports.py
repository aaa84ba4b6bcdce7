"""Signed reports for auditors: the compliance report and a campaign's evidence.

Each is a bundle like an audit export (``audit.exports.write_signed_files``):
a PDF, CSV files that hold every row, the public key, and ``manifest.json``
signed with the audit signing key, so ``manage.py verify_audit_export`` or
openssl checks it offline. The manifest's ``requestedBy`` is the person who
asked. Both need ``kmsweb:ExportComplianceReport`` (auditors, administrators).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from audit import canonical, exports
from audit.report import MAX_ROWS, ReportData, Section, write_pdf
from audit.services import audited
from audit.services.exporting import bundle_signer
from compliance.models import Campaign, CampaignItem, Finding, FindingChange, FindingStatus
from compliance.rules import RULES
from compliance.selectors import _progress_of, scores_for
from kmsweb.lib import clock
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import ValidationError
from policies.authorization import authorize

EVENT_SOURCE = "kmsweb.compliance"
EXPORT_ACTION = "kmsweb:ExportComplianceReport"
CSV_MORE = "the CSV files of this report hold every one."

RULE_COLUMNS = ("ruleId", "title", "severity", "resourceKind", "frameworks", "compliant", "nonCompliant", "suppressed")
FINDING_COLUMNS = (
    "findingId",
    "ruleId",
    "severity",
    "status",
    "resourceKind",
    "resourceId",
    "keyId",
    "principalArn",
    "firstSeen",
    "lastSeen",
    "resolvedAt",
    "evidence",
    "remediation",
)
SUPPRESSION_COLUMNS = ("findingId", "ruleId", "resourceId", "at", "by", "change", "justification", "currentStatus")
ITEM_COLUMNS = (
    "campaignId",
    "campaign",
    "itemId",
    "kind",
    "keyId",
    "grantId",
    "principalArn",
    "policyName",
    "reviewers",
    "reviewerSource",
    "status",
    "decidedAt",
    "decidedBy",
    "automatic",
    "escalatedAt",
    "comment",
    "narrowedDocument",
)


def _iso(value: datetime | None) -> str:
    return canonical.iso(value) if value else ""


def _csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Callable[[BinaryIO], object]:
    def write(out: BinaryIO) -> None:
        text = io.StringIO(newline="")
        writer = csv.writer(text, lineterminator="\r\n")
        writer.writerow(header)
        writer.writerows(rows)
        out.write(text.getvalue().encode("utf-8"))

    return write


def _item_row(item: CampaignItem, campaign: Campaign) -> list[Any]:
    return [
        campaign.pk,
        campaign.name,
        item.pk,
        item.kind,
        item.key_id,
        item.grant_id,
        item.principal_arn,
        item.policy_name,
        " ".join(item.reviewers) or "security team",
        item.reviewer_source,
        item.status,
        _iso(item.decided_at),
        item.decided_by,
        "true" if item.automatic else "false",
        _iso(item.escalated_at),
        item.comment,
        item.narrowed_document,
    ]


def _pdf(data: ReportData) -> Callable[[BinaryIO], object]:
    return lambda out: write_pdf(out, data)


def _section(title: str, header: list[str], rows: list[list[Any]], empty: str) -> Section:
    return Section(title=title, header=header, rows=rows[:MAX_ROWS], total=len(rows), empty=empty, more=CSV_MORE)


# -- The compliance report ---------------------------------------------------------------------------


def _compliance_files(caller: Caller, now: datetime) -> tuple[list[tuple[str, Any]], dict[str, Any]]:
    account = caller.account_id
    scores = scores_for(caller=caller)
    rule_rows = [
        [
            s.rule.id,
            s.rule.title,
            s.rule.severity.value,
            s.rule.resource_kind.value,
            "; ".join(f"{fw} {c}" for fw, c in s.rule.frameworks),
            s.compliant,
            s.non_compliant,
            s.suppressed,
        ]
        for s in scores["rules"]
    ]
    findings = list(
        Finding.objects.filter(account_id=account).exclude(status=FindingStatus.COMPLIANT).order_by("rule_id", "pk")
    )
    finding_rows = [
        [
            f.pk,
            f.rule_id,
            f.severity,
            f.status,
            f.resource_kind,
            f.resource_id,
            f.key_id,
            f.principal_arn,
            _iso(f.first_seen_at),
            _iso(f.last_seen_at),
            _iso(f.resolved_at),
            json.dumps(f.evidence, sort_keys=True, ensure_ascii=False),
            f.remediation,
        ]
        for f in findings
    ]
    changes = (
        FindingChange.objects.filter(finding__account_id=account)
        .filter(new_status=FindingStatus.SUPPRESSED)
        .select_related("finding")
        .order_by("at", "pk")
    )
    suppression_rows = [
        [
            c.finding_id,
            c.finding.rule_id,
            c.finding.resource_id,
            _iso(c.at),
            c.actor,
            "suppressed",
            c.note,
            c.finding.status,
        ]
        for c in changes
    ]
    campaigns = list(Campaign.objects.filter(account_id=account).order_by("started_at", "pk"))
    by_pk = {c.pk: c for c in campaigns}
    item_rows = [
        _item_row(i, by_pk[i.campaign_id])
        for i in CampaignItem.objects.filter(campaign__in=campaigns).order_by("campaign_id", "pk")
    ]
    progress = _progress_of(list(by_pk))
    campaign_rows = [
        [
            c.pk,
            c.name,
            _iso(c.started_at),
            _iso(c.deadline),
            c.state,
            progress[c.pk].total,
            progress[c.pk].confirmed,
            progress[c.pk].narrowed,
            progress[c.pk].revoked,
            progress[c.pk].pending,
        ]
        for c in campaigns
    ]
    open_findings = sum(1 for f in findings if f.status == FindingStatus.NON_COMPLIANT)
    data = ReportData(
        title="kmsweb compliance report",
        period=f"state as of {now:%Y-%m-%d %H:%M:%S} UTC",
        scope=f"account {account}",
        generated_at=now,
        summary=[
            ("Rules", str(len(RULES))),
            ("Open findings", str(open_findings)),
            ("Suppressed findings", str(sum(1 for f in findings if f.status == FindingStatus.SUPPRESSED))),
            ("Resolved findings", str(sum(1 for f in findings if f.status == FindingStatus.RESOLVED))),
            ("Campaigns", str(len(campaigns))),
            ("Requested by", caller.principal_arn),
        ],
        sections=[
            _section(
                "Rules and scores",
                ["Rule", "Title", "Severity", "Judges", "Frameworks", "Compliant", "Open", "Suppressed"],
                rule_rows,
                "No rule.",
            ),
            _section(
                "Findings (open, suppressed and resolved) with evidence",
                ["Id", "Rule", "Severity", "Status", "Resource", "First seen", "Evidence", "Remediation"],
                [[r[0], r[1], r[2], r[3], r[5], r[8], r[11], r[12]] for r in finding_rows],
                "No finding.",
            ),
            _section(
                "Suppressions and their justifications",
                ["Finding", "Rule", "Resource", "At", "By", "Justification", "Now"],
                [[r[0], r[1], r[2], r[3], r[4], r[6], r[7]] for r in suppression_rows],
                "No finding was ever suppressed.",
            ),
            _section(
                "Re-certification campaigns",
                ["Id", "Name", "Started", "Deadline", "State", "Items", "Confirmed", "Narrowed", "Revoked", "Pending"],
                campaign_rows,
                "No campaign yet.",
            ),
        ],
    )
    files = [
        ("report.pdf", _pdf(data)),
        ("rules.csv", _csv(RULE_COLUMNS, rule_rows)),
        ("findings.csv", _csv(FINDING_COLUMNS, finding_rows)),
        ("suppressions.csv", _csv(SUPPRESSION_COLUMNS, suppression_rows)),
        ("campaign-items.csv", _csv(ITEM_COLUMNS, item_rows)),
    ]
    counts = {
        "rules": len(rule_rows),
        "findings": len(finding_rows),
        "suppressions": len(suppression_rows),
        "campaignItems": len(item_rows),
    }
    return files, counts


def compliance_report_write(*, caller: Caller, out_dir: Path, now: datetime | None = None) -> dict[str, Any]:
    """Write the signed compliance report of the caller's account to ``out_dir`` (new or empty).

    Rules with their scores, findings (open, suppressed, resolved) with
    evidence and remediation, every suppression with its justification,
    and every campaign item's outcome. Recorded as ExportComplianceReport.
    """
    now = now or clock.now()
    with audited(caller, "ExportComplianceReport", read_only=True, event_source=EVENT_SOURCE, atomic=False) as op:
        authorize(caller=caller, action=EXPORT_ACTION)
        files, counts = _compliance_files(caller, now)
        manifest = _write(out_dir, files, caller, now, "compliance report", {"counts": counts})
        op.response_elements = {"Files": [f["name"] for f in manifest["files"]], **counts}
    return manifest


def _write(
    out_dir: Path, files: list[tuple[str, Any]], caller: Caller, now: datetime, report: str, extra: dict[str, Any]
) -> dict[str, Any]:
    try:
        return exports.write_signed_files(
            out_dir=out_dir,
            files=files,
            signer=bundle_signer(),
            manifest_fields={
                "report": report,
                "createdAt": canonical.iso(now),
                "requestedBy": caller.principal_arn,
                "scope": {"accountId": caller.account_id},
                **extra,
            },
        )
    except exports.BundleError as exc:
        raise ValidationError(str(exc)) from exc


# -- A campaign's evidence -----------------------------------------------------------------------------


def campaign_report_write(
    *, caller: Caller, campaign: Campaign, out_dir: Path, now: datetime | None = None
) -> dict[str, Any]:
    """Write a campaign's signed evidence (PDF and items.csv) to ``out_dir``. Recorded as ExportCampaignReport."""
    now = now or clock.now()
    params = {"CampaignId": campaign.pk}
    with audited(
        caller,
        "ExportCampaignReport",
        request_parameters=params,
        read_only=True,
        event_source=EVENT_SOURCE,
        atomic=False,
    ) as op:
        authorize(caller=caller, action=EXPORT_ACTION)
        items = list(campaign.items.order_by("pk"))
        rows = [_item_row(i, campaign) for i in items]
        progress = _progress_of([campaign.pk])[campaign.pk]
        data = ReportData(
            title=f"Access re-certification: {campaign.name}",
            period=f"{campaign.started_at:%Y-%m-%d %H:%M} to {campaign.deadline:%Y-%m-%d %H:%M} UTC (deadline)",
            scope=f"account {campaign.account_id}",
            generated_at=now,
            summary=[
                ("State", campaign.get_state_display()),
                ("Started by", campaign.started_by),
                ("Items", str(progress.total)),
                ("Confirmed", str(progress.confirmed)),
                ("Narrowed", str(progress.narrowed)),
                ("Revoked", str(progress.revoked)),
                ("Pending", str(progress.pending)),
                ("Escalated at", _iso(campaign.escalated_at) or "not escalated"),
                ("Auto-revoke at the deadline", "yes" if campaign.auto_revoke else "no"),
                ("Requested by", caller.principal_arn),
            ],
            sections=[
                _section(
                    "Items and decisions",
                    ["Item", "Access", "Reviewers", "Status", "Decided", "By", "Comment"],
                    [
                        [i.pk, i.label, r[8], i.status, r[11], i.decided_by, i.comment]
                        for i, r in zip(items, rows, strict=True)
                    ],
                    "This campaign had nothing to review.",
                )
            ],
        )
        files = [("report.pdf", _pdf(data)), ("items.csv", _csv(ITEM_COLUMNS, rows))]
        extra = {"campaign": {"id": campaign.pk, "name": campaign.name, "state": campaign.state}}
        manifest = _write(out_dir, files, caller, now, "campaign evidence", extra)
        op.response_elements = {"Files": [f["name"] for f in manifest["files"]], "Items": len(items)}
    return manifest


def zipped(write: Callable[[Path], object]) -> bytes:
    """Run a report writer in a temporary directory and return the bundle as a zip."""
    with tempfile.TemporaryDirectory(prefix="kmsweb-report-") as tmp:
        bundle = Path(tmp) / "bundle"
        write(bundle)
        archive = shutil.make_archive(str(Path(tmp) / "report"), "zip", root_dir=bundle)
        return Path(archive).read_bytes()
