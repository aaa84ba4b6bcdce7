"""``aws sts …`` with the AWS CLI, unchanged, against a live kmsweb.

The MFA path an operator takes: ``aws sts get-session-token --serial-number
… --token-code …``, then ``aws kms schedule-key-deletion`` with the
temporary credentials, against a key whose policy requires MFA.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from django_otp.oath import hotp

from keys.services import key_create
from keys.services.common import mfa_key_policy
from kmsweb.lib.caller import Caller
from policies.services.sts import mfa_device_create
from tests.conftest import REGION, Persona

pytestmark = pytest.mark.django_db(transaction=True)

AWS = Path(sys.executable).parent / "aws"


def _aws(live_server: Any, tmp_path: Path, creds: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_MAX_ATTEMPTS": "1",
        **creds,
    }
    return subprocess.run(
        [str(AWS), *args, "--endpoint-url", live_server.url, "--output", "json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_gets_a_session_token_with_mfa_and_schedules_a_deletion_with_the_cli(
    live_server: Any, key_admin: Persona, tmp_path: Path
) -> None:
    key = key_create(
        caller=key_admin.caller(), policy=mfa_key_policy(key_admin.account_id), bypass_policy_lockout_check=True
    )
    enrolment = mfa_device_create(caller=Caller.system("tests"), principal=key_admin.principal, name="cli-phone")
    secret = base64.b32decode(enrolment.secret_b32 + "=" * (-len(enrolment.secret_b32) % 8))
    code = str(hotp(secret, int(datetime.now(UTC).timestamp()) // 30, digits=6)).zfill(6)
    long_term = {"AWS_ACCESS_KEY_ID": key_admin.access_key_id, "AWS_SECRET_ACCESS_KEY": key_admin.secret}

    refused = _aws(live_server, tmp_path, long_term, "kms", "schedule-key-deletion", "--key-id", str(key.id))
    assert refused.returncode != 0 and "AccessDeniedException" in refused.stderr

    got = _aws(
        live_server,
        tmp_path,
        long_term,
        "sts",
        "get-session-token",
        "--serial-number",
        enrolment.device.serial,
        "--token-code",
        code,
    )
    assert got.returncode == 0, got.stderr
    creds = json.loads(got.stdout)["Credentials"]
    session = {
        "AWS_ACCESS_KEY_ID": creds["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": creds["SecretAccessKey"],
        "AWS_SESSION_TOKEN": creds["SessionToken"],
    }
    who = _aws(live_server, tmp_path, session, "sts", "get-caller-identity")
    assert json.loads(who.stdout)["Arn"] == key_admin.principal.arn
    done = _aws(live_server, tmp_path, session, "kms", "schedule-key-deletion", "--key-id", str(key.id))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["KeyState"] == "PendingDeletion"

    reused = _aws(
        live_server,
        tmp_path,
        long_term,
        "sts",
        "get-session-token",
        "--serial-number",
        enrolment.device.serial,
        "--token-code",
        code,
    )
    assert reused.returncode != 0
    assert "AccessDenied" in reused.stderr and "invalid MFA one time pass code" in reused.stderr
