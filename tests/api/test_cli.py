"""The AWS CLI, unchanged, against a live kmsweb (``--endpoint-url``).

Each ``aws`` run is a subprocess costing about a second, so one test walks
the whole path and one checks how an error reaches the shell.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REGION, Persona

pytestmark = pytest.mark.django_db(transaction=True)

AWS = Path(sys.executable).parent / "aws"


@pytest.fixture
def aws(live_server: Any, key_admin: Persona, tmp_path: Path) -> Any:
    """Run ``aws kms <args>`` as key_admin; return the CompletedProcess."""
    # Nothing from the developer's own AWS setup may leak in.
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_ACCESS_KEY_ID": key_admin.access_key_id,
        "AWS_SECRET_ACCESS_KEY": key_admin.secret,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_MAX_ATTEMPTS": "1",
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(AWS), "kms", *args, "--endpoint-url", live_server.url, "--output", "json"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


def ok(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.strip() else None


def test_it_creates_aliases_encrypts_decrypts_and_lists_with_the_cli(aws, tmp_path: Path) -> None:
    meta = ok(aws("create-key", "--description", "from the cli"))["KeyMetadata"]
    assert meta["Description"] == "from the cli"
    assert meta["KeyState"] == "Enabled"

    assert ok(aws("create-alias", "--alias-name", "alias/cli", "--target-key-id", meta["KeyId"])) is None

    plaintext = bytes(range(256)) * 4  # every byte value, 1 KiB
    (tmp_path / "plain.bin").write_bytes(plaintext)
    sealed = ok(
        aws(
            "encrypt",
            "--key-id",
            "alias/cli",
            "--plaintext",
            "fileb://plain.bin",
            "--encryption-context",
            "app=cli,stage=test",
        )
    )
    assert sealed["KeyId"] == meta["Arn"]
    (tmp_path / "sealed.bin").write_bytes(base64.b64decode(sealed["CiphertextBlob"]))

    opened = ok(
        aws(
            "decrypt",
            "--ciphertext-blob",
            "fileb://sealed.bin",
            "--encryption-context",
            "app=cli,stage=test",
        )
    )
    assert base64.b64decode(opened["Plaintext"]) == plaintext
    assert opened["KeyId"] == meta["Arn"]

    listed = ok(aws("list-keys"))
    assert {"KeyId": meta["KeyId"], "KeyArn": meta["Arn"]} in listed["Keys"]


def test_it_fails_with_the_aws_error_code_on_stderr(aws) -> None:
    result = aws("describe-key", "--key-id", "alias/nobody")
    assert result.returncode != 0
    assert "NotFoundException" in result.stderr
    assert "alias/nobody" in result.stderr
    assert result.stdout == ""
