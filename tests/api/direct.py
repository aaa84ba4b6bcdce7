"""Calls of the KMS API past its signature check, for tables of many cases.

``call`` hands a request body to ``kmsweb.api.views.serve``, the part of the
wire adapter that runs once the SigV4 signature is verified: the model's
validation, the handler, the service, the audit record and AWS's error
body are all the real ones. Only the HTTP round trip and the signing are
left out, which keeps a table of hundreds of cases fast; the live-server
tests cover those.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kmsweb.api.views import serve
from tests.conftest import Persona


def _jsonable(value: Any) -> Any:
    """What boto3 puts on the wire: blobs in base64, timestamps in epoch seconds."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class Answer:
    """One answer of the API, decoded."""

    status: int
    body: dict[str, Any]

    @property
    def code(self) -> str | None:
        """The AWS error code, or None for a success."""
        return self.body.get("__type") if self.status != 200 else None

    @property
    def message(self) -> str | None:
        return self.body.get("message")

    def out(self, member: str) -> Any:
        """A member of a successful answer, blobs decoded."""
        assert self.status == 200, self.body
        return self.body[member]

    def blob(self, member: str) -> bytes:
        return base64.b64decode(self.out(member))


def call(persona: Persona, operation: str, /, **params: Any) -> Answer:
    """Serve ``operation`` with ``params`` (as boto3 would send them) for ``persona``."""
    answer = serve(persona.caller(), operation, _jsonable(params), "direct-call")
    return Answer(answer.status, json.loads(answer.body))
