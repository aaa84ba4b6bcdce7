"""The signed compliance report and a campaign's signed evidence: contents,
requestedBy, offline verification (the command and openssl), and failure
when one byte changes; only auditors and administrators export."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
from django.core.management.base import CommandError

from audit import exports
from audit.models import AuditEvent
from compliance.campaigns import campaign_item_decide, campaign_start
from compliance.models import CampaignItem, Finding, FindingStatus
from compliance.reports import campaign_report_write, compliance_report_write, zipped
from compliance.services import compliance_evaluate, finding_suppress
from keys.models import Key
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import AccessDenied
from tests.audit.conftest import run_command
from tests.compliance.test_campaigns import caller_of
from tests.dashboard_fixtures import DashboardUser

T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
OPENSSL = shutil.which("openssl")


@pytest.fixture
def state(make_key: Callable[..., Key], make_dashboard_user: Callable[..., DashboardUser]) -> dict[str, DashboardUser]:
    """A non-compliant key (rotation off), one suppressed finding, a campaign with a confirmed item."""
    people = {
        "otto": make_dashboard_user("otto", "auditor"),
        "april": make_dashboard_user("april", "approver"),
        "ada": make_dashboard_user("ada", "administrator"),
        "vera": make_dashboard_user("vera", "viewer"),
    }
    with time_machine.travel(T0 - timedelta(days=1), tick=False):
        make_key(description="payments")
    with time_machine.travel(T0, tick=False):
        compliance_evaluate(caller=Caller.system("evaluate_compliance"), now=T0)
        finding = Finding.objects.filter(status=FindingStatus.NON_COMPLIANT).order_by("pk").first()
        assert finding is not None
        finding_suppress(
            caller=caller_of(people["april"]),
            finding=finding,
            justification="Legacy HSM migration until June (RISK-42).",
            until=T0 + timedelta(days=30),
        )
        campaign = campaign_start(caller=caller_of(people["ada"]), name="Q2 review")
        item = CampaignItem.objects.filter(campaign=campaign).order_by("pk").first()
        assert item is not None
        campaign_item_decide(caller=caller_of(people["april"]), item=item, decision="confirm", comment="Needed.")
    return people


def rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def test_the_compliance_report_holds_rules_findings_suppressions_and_campaigns(
    state: dict[str, DashboardUser], tmp_path: Path
) -> None:
    out = tmp_path / "report"
    with time_machine.travel(T0 + timedelta(hours=1), tick=False):
        manifest = compliance_report_write(caller=caller_of(state["otto"]), out_dir=out)
    assert manifest["requestedBy"] == state["otto"].arn and manifest["report"] == "compliance report"
    names = {f["name"] for f in manifest["files"]}
    assert names == {
        "report.pdf",
        "rules.csv",
        "findings.csv",
        "suppressions.csv",
        "campaign-items.csv",
        "public-key.pem",
    }
    assert (out / "report.pdf").read_bytes().startswith(b"%PDF")
    assert {r["ruleId"] for r in rows(out / "rules.csv")} >= {"kms-rotation-enabled"}
    findings = rows(out / "findings.csv")
    assert {r["status"] for r in findings} >= {"NON_COMPLIANT", "SUPPRESSED"}
    assert all(json.loads(r["evidence"]) is not None for r in findings)
    (suppression,) = rows(out / "suppressions.csv")
    assert "RISK-42" in suppression["justification"] and suppression["by"] == state["april"].arn
    decided = [r for r in rows(out / "campaign-items.csv") if r["status"] == "CONFIRMED"]
    assert len(decided) == 1 and decided[0]["comment"] == "Needed." and decided[0]["decidedBy"] == state["april"].arn
    assert exports.verify_bundle(out).ok
    event = AuditEvent.objects.get(event_name="ExportComplianceReport")
    assert event.principal_arn == state["otto"].arn and event.error_code == ""


@pytest.mark.parametrize("victim", ["findings.csv", "report.pdf", "manifest.json"])
def test_a_changed_byte_fails_verification(state: dict[str, DashboardUser], tmp_path: Path, victim: str) -> None:
    out = tmp_path / "report"
    compliance_report_write(caller=caller_of(state["otto"]), out_dir=out)
    out_, _ = run_command("verify_audit_export", str(out))
    assert out_.startswith(f"OK: {out} (compliance report, 6 files)")
    data = bytearray((out / victim).read_bytes())
    data[len(data) // 2] ^= 0x01
    (out / victim).write_bytes(bytes(data))
    check = exports.verify_bundle(out)
    assert not check.ok and check.problems[0].startswith(victim)
    with pytest.raises(CommandError, match="export verification FAILED"):
        run_command("verify_audit_export", str(out))


@pytest.mark.skipif(OPENSSL is None, reason="needs openssl")
def test_openssl_verifies_the_report_signature(state: dict[str, DashboardUser], tmp_path: Path) -> None:
    out = tmp_path / "report"
    compliance_report_write(caller=caller_of(state["otto"]), out_dir=out)
    cmd = ["openssl", "dgst", "-sha256", "-verify", "public-key.pem", "-signature", "manifest.sig", "manifest.json"]
    assert subprocess.run(cmd, cwd=out, capture_output=True, text=True, check=False).stdout.strip() == "Verified OK"
    manifest = json.loads((out / "manifest.json").read_text())
    listed = {f["name"]: f["sha256"] for f in manifest["files"]}
    digest = subprocess.run(
        ["openssl", "dgst", "-sha256", "-r", "findings.csv"], cwd=out, capture_output=True, text=True
    )
    assert digest.stdout.split()[0] == listed["findings.csv"]


def test_the_campaign_evidence_is_signed_and_zipped(state: dict[str, DashboardUser], tmp_path: Path) -> None:
    campaign = CampaignItem.objects.order_by("pk").first().campaign  # type: ignore[union-attr]
    data = zipped(lambda out: campaign_report_write(caller=caller_of(state["ada"]), campaign=campaign, out_dir=out))
    out = tmp_path / "evidence"
    zipfile.ZipFile(io.BytesIO(data)).extractall(out)
    check = exports.verify_bundle(out)
    assert check.ok, check.problems
    assert check.manifest["campaign"]["name"] == "Q2 review" and check.manifest["requestedBy"] == state["ada"].arn
    items = rows(out / "items.csv")
    assert len(items) == CampaignItem.objects.filter(campaign=campaign).count()


@pytest.mark.parametrize("who", ["vera", "april"])
def test_only_auditors_and_administrators_export(state: dict[str, DashboardUser], tmp_path: Path, who: str) -> None:
    with pytest.raises(AccessDenied):
        compliance_report_write(caller=caller_of(state[who]), out_dir=tmp_path / "nope")
    assert not (tmp_path / "nope").exists()
    assert AuditEvent.objects.get(event_name="ExportComplianceReport").error_code == "AccessDeniedException"
