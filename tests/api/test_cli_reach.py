"""Every operation kmsweb serves is reachable through the AWS CLI, unchanged, against a live server.

The CLI runs in this process (``awscli.clidriver``: the same driver the
``aws`` command runs, without a second's start-up per call) with each
operation's required members, given through ``--cli-input-json``. An answer
from kmsweb, success or an AWS error, leaves an audit event named after the
operation: that event is the proof the call arrived and was served, not
refused by the CLI (unknown command, parameter validation) on its way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from awscli.clidriver import create_clidriver
from botocore import xform_name
from botocore.session import get_session

from audit.models import AuditEvent
from kmsweb.api.handlers import HANDLERS
from tests.conftest import REGION, Persona

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = get_session().get_service_model("kms")


def _value(shape: Any) -> Any:
    """A value of ``shape`` that passes the CLI's own checks (lengths, required members)."""
    if shape.type_name == "structure":
        return {name: _value(shape.members[name]) for name in shape.required_members}
    if shape.type_name == "list":
        return [_value(shape.member)]
    if shape.type_name == "map":
        return {"k": _value(shape.value)}
    if shape.type_name in ("integer", "long"):
        return int(shape.metadata.get("min", 1))
    if shape.type_name == "boolean":
        return False
    if getattr(shape, "enum", None):
        return shape.enum[0]
    return "x" * max(1, int(shape.metadata.get("min", 1)))


def required_input(operation: str) -> dict[str, Any]:
    shape = MODEL.operation_model(operation).input_shape
    return _value(shape) if shape is not None else {}


def test_every_served_operation_is_reachable_with_the_cli(
    live_server: Any, key_admin: Persona, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "HOME": str(tmp_path),
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_ACCESS_KEY_ID": key_admin.access_key_id,
        "AWS_SECRET_ACCESS_KEY": key_admin.secret,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_MAX_ATTEMPTS": "1",
    }.items():
        monkeypatch.setenv(name, value)
    unreached = []
    for operation in sorted(HANDLERS):
        mark = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
        command = xform_name(operation, "-")
        args = ["kms", command, "--cli-input-json", json.dumps(required_input(operation))]
        exit_code = create_clidriver().main([*args, "--endpoint-url", live_server.url, "--output", "json"])
        # The CLI's exit code does not tell kmsweb's AWS errors from its own refusals; the event does.
        if not AuditEvent.objects.filter(id__gt=mark, event_name=operation).exists():
            unreached.append((operation, exit_code))
    assert unreached == [], "operations the CLI could not reach"
    assert len(HANDLERS) == len(MODEL.operation_names) == 56
