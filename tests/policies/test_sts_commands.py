"""The STS management commands: create_role, add_mfa_device, delete_principal."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from audit.models import AuditEvent
from policies.models import MfaDevice, Principal, PrincipalType

pytestmark = pytest.mark.django_db

ACCOUNT = settings.KMSWEB_ACCOUNT_ID


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_it_creates_a_role_with_a_trust_policy_and_refuses_a_bad_one(tmp_path: Path) -> None:
    trust = tmp_path / "trust.json"
    trust.write_text(
        json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        )
    )
    assert run("create_role", "deployer", "--trust-policy-file", str(trust)).strip() == (
        f"arn:aws:iam::{ACCOUNT}:role/deployer"
    )
    role = Principal.objects.get(name="deployer", type=PrincipalType.ROLE)
    assert json.loads(role.trust_policy)["Statement"][0]["Action"] == "sts:AssumeRole"
    assert AuditEvent.objects.filter(event_name="UpdateAssumeRolePolicy", error_code="").count() == 1

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}]}))
    with pytest.raises(CommandError, match="no Principal"):
        run("create_role", "other", "--trust-policy-file", str(bad))
    assert not Principal.objects.filter(name="other").exists()
    with pytest.raises(CommandError, match="no Principal"):
        run("create_role", "deployer", "--update", "--trust-policy-file", str(bad))
    role.refresh_from_db()
    assert "root" in role.trust_policy


def test_it_enrols_an_mfa_device_and_prints_its_serial_and_uri() -> None:
    run("create_principal", "app")
    serial, uri = run("add_mfa_device", "app", "app-phone").splitlines()
    assert serial == f"arn:aws:iam::{ACCOUNT}:mfa/app-phone"
    assert re.fullmatch(r"otpauth://totp/kmsweb%3Aapp%40\d{12}\?secret=[A-Z2-7]{32}&issuer=kmsweb&.*", uri)
    secret = uri.split("secret=")[1].split("&")[0]
    device = MfaDevice.objects.get()
    assert secret.encode() not in bytes(device.secret_ciphertext)
    assert secret not in json.dumps([e.response_elements for e in AuditEvent.objects.all()])
    with pytest.raises(CommandError, match="already exists"):
        run("add_mfa_device", "app", "app-phone")
    with pytest.raises(CommandError, match="does not exist"):
        run("add_mfa_device", "nobody", "x")


def test_it_deletes_a_principal_with_its_devices() -> None:
    run("create_principal", "app")
    run("add_mfa_device", "app", "app-phone")
    assert run("delete_principal", "app").strip() == f"deleted arn:aws:iam::{ACCOUNT}:user/app"
    assert not Principal.objects.filter(name="app").exists()
    assert not MfaDevice.objects.exists()
    assert AuditEvent.objects.filter(event_name="DeletePrincipal", error_code="").count() == 1
