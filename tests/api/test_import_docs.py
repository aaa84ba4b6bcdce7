"""docs/IMPORT.md's script, run as written: the AWS CLI and openssl against a live kmsweb."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from keys.models import Key, KeyMaterial
from tests.conftest import REGION, Persona
from tests.importing import require_tools

pytestmark = pytest.mark.django_db(transaction=True)

DOC = Path(__file__).resolve().parents[2] / "docs" / "IMPORT.md"
SCRIPT = re.compile(r"<!-- import-script:begin -->\s*```bash\n(.*?)```\s*<!-- import-script:end -->", re.S)


def test_it_runs_the_documented_import_script(live_server: Any, key_admin: Persona, tmp_path: Path) -> None:
    require_tools("openssl", "xxd")
    match = SCRIPT.search(DOC.read_text())
    assert match, "docs/IMPORT.md lost its import script markers"
    env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path),
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_ACCESS_KEY_ID": key_admin.access_key_id,
        "AWS_SECRET_ACCESS_KEY": key_admin.secret,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_ENDPOINT_URL": live_server.url,
    }
    result = subprocess.run(
        ["bash", "-c", match.group(1)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].split() == ["Enabled", "EXTERNAL", "KEY_MATERIAL_EXPIRES"]
    key = Key.objects.get(origin="EXTERNAL")
    material = (tmp_path / "PlaintextKeyMaterial.bin").read_bytes()
    assert key.valid_to is not None and KeyMaterial.objects.filter(key=key).count() == 1
    # kmsweb encrypted under exactly the material the script made.
    from keys.crypto import decrypt

    assert decrypt(material, (tmp_path / "ciphertext.bin").read_bytes()) == b"hello"
