"""Copying the audit anchor off the host: ``KMSWEB_AUDIT_ANCHOR_URL``.

The anchor file is the guarantee; the sink the operator names keeps a copy
that the host's administrators cannot reach. After each sealing round the
lines the sink has not acknowledged are POSTed in order, at most ``BATCH``
per request, as ``{"version": "1", "lines": [<anchor line>, ...]}``. Each
line verifies on its own with the audit public key (``audit.anchor``);
with ``KMSWEB_AUDIT_ANCHOR_SECRET`` set, a request also carries the alarm
webhooks' ``X-Kmsweb-Timestamp`` and ``X-Kmsweb-Signature`` headers
(``sha256=`` HMAC-SHA256 of ``<timestamp>.<body>``).

A 2xx answer acknowledges the batch; the position of the last acknowledged
line is kept next to the anchor (``<anchor>.sent``), so a sink that was
down receives every line it missed, in order, at a later round. A receiver
should accept again a line it holds (same sequence, same hash) and raise
the alarm on a sequence it holds with another hash. Failures are logged
and retried each round; they never stop sealing.
"""

from __future__ import annotations

import fcntl
import http.client
import json
import logging
import os
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from audit import anchor
from audit.services.anchoring import anchor_path, sink_cursor_path
from audit.services.notifications import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

logger = logging.getLogger(__name__)

BATCH = 500
MAX_RESPONSE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Cursor:
    """The last line the sink acknowledged: its sequence, and the anchor's byte offset just after it."""

    sequence: int = 0
    offset: int = 0


def cursor_read() -> Cursor:
    """Where delivery stands (nothing delivered when the file is missing or unreadable)."""
    try:
        doc = json.loads(sink_cursor_path().read_bytes())
        return Cursor(int(doc["sequence"]), int(doc["offset"]))
    except (OSError, ValueError, KeyError, TypeError):
        return Cursor()


def _cursor_write(cursor: Cursor) -> None:
    path = sink_cursor_path()
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        os.write(fd, json.dumps({"sequence": cursor.sequence, "offset": cursor.offset}).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def _pending(cursor: Cursor) -> tuple[list[bytes], Cursor]:
    """Up to ``BATCH`` whole lines after ``cursor``, checked, and the cursor after them."""
    path = anchor_path()
    lines: list[bytes] = []
    sequence, offset = cursor.sequence, cursor.offset
    with path.open("rb") as fh:
        if os.fstat(fh.fileno()).st_size < offset:
            raise anchor.AnchorError(f"{path} is shorter than what the sink already acknowledged")
        fh.seek(offset)
        for raw in fh:
            if not raw.endswith(b"\n") or len(lines) == BATCH:
                break  # a line still being written waits for the next round
            line = anchor.AnchorLine.parse(raw, f"{path} at byte {offset}")
            if line.sequence != sequence + 1:
                raise anchor.AnchorError(f"{path} skips from digest {sequence} to {line.sequence}")
            lines.append(raw.rstrip(b"\n"))
            sequence, offset = line.sequence, offset + len(raw)
    return lines, Cursor(sequence, offset)


def _post(url: str, body: bytes) -> str | None:
    """POST ``body``; None when acknowledged (2xx), else why not."""
    parts = urlsplit(url)
    timeout = settings.KMSWEB_WEBHOOK_READ_TIMEOUT
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(
            parts.hostname or "", parts.port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    headers = {"Content-Type": "application/json", "User-Agent": "kmsweb-anchor/1"}
    secret = settings.KMSWEB_AUDIT_ANCHOR_SECRET
    if secret:
        timestamp = str(int(time.time()))
        headers[TIMESTAMP_HEADER] = timestamp
        headers[SIGNATURE_HEADER] = sign(secret.encode(), timestamp, body)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("POST", target, body=body, headers=headers)
        response = conn.getresponse()
        response.read(MAX_RESPONSE_BYTES)
    except (OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
    return None if 200 <= response.status < 300 else f"HTTP {response.status}"


def anchor_publish() -> int:
    """Send the sink every anchor line it has not acknowledged; the number acknowledged now.

    One publisher at a time (a lock file next to the anchor; a second one
    returns at once). Never raises: the sink is a copy, sealing goes on.
    """
    url = settings.KMSWEB_AUDIT_ANCHOR_URL
    if not url or not anchor.exists(anchor_path()):
        return 0
    lock_path = sink_cursor_path().with_name(sink_cursor_path().name + ".lock")
    try:
        lock = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o640)
    except OSError as exc:
        logger.error("audit anchor sink: cannot open %s: %s", lock_path, exc.strerror)
        return 0
    sent = 0
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0
        cursor = cursor_read()
        while True:
            lines, after = _pending(cursor)
            if not lines:
                return sent
            body = b'{"lines":[' + b",".join(lines) + b'],"version":"1"}'
            failure = _post(url, body)
            if failure is not None:
                logger.warning(
                    "audit anchor sink %s did not take digests %d-%d: %s",
                    url,
                    cursor.sequence + 1,
                    after.sequence,
                    failure,
                )
                return sent
            _cursor_write(after)
            sent += len(lines)
            cursor = after
    except (OSError, anchor.AnchorError) as exc:
        logger.error("audit anchor sink: %s", exc)
        return sent
    finally:
        os.close(lock)
