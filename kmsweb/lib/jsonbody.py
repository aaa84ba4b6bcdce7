"""Decoding a JSON request body, shared by the KMS API and kmsweb's REST API."""

from __future__ import annotations

import json
import re
from typing import Any

from kmsweb.lib.errors import SerializationError

# A \uD800-\uDFFF escape: half of a surrogate pair, or a lone (invalid) one.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def parse_body(raw: bytes, *, not_json: str = "Start of structure or map found where not expected.") -> Any:
    """Decode a request body as JSON (an empty body is ``{}``), or raise ``SerializationError``.

    Refused: text that is not JSON or not UTF-8, nesting deeper than the
    decoder's recursion allows (AWS's JSON reader has a nesting limit too; no
    KMS input nests more than four levels), and a string holding half a UTF-16
    surrogate pair, which no UTF-8 text can hold and so nothing later could
    store or echo. ``not_json`` is the message for text that is not JSON (the
    default is AWS's).
    """
    try:
        body = json.loads(raw or b"{}")
    except RecursionError:
        raise SerializationError("The JSON body is nested too deeply.") from None
    except (ValueError, UnicodeDecodeError):
        raise SerializationError(not_json) from None
    # json.loads lets "\ud800" through as a lone surrogate; only bodies with
    # such an escape pay for the check.
    if b"\\u" in raw and _SURROGATE_ESCAPE.search(raw) and _has_lone_surrogate(body):
        raise SerializationError("Invalid UTF-16 surrogate in a JSON string.")
    return body


def _has_lone_surrogate(value: Any) -> bool:
    # Iterative: the body may nest as deep as the decoder allowed.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False
