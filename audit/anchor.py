"""The audit anchor: the digest chain's head, written outside the database.

Every digest the sealer commits is appended as one line to an append-only
file (``KMSWEB_AUDIT_ANCHOR_FILE``), so whoever can rewrite the database
cannot also rewind the chain unnoticed: deleting the newest digests (with
their events), replacing them, or emptying both tables leaves the anchor
ahead of, or different from, the database. A line is canonical JSON::

    {"anchoredAt": ..., "digestEndTime": ..., "digestSha256": ..., "eventCount": ...,
     "firstEventId": ..., "keyFingerprint": ..., "lastEventId": ...,
     "previousDigestSha256": ..., "sequence": ..., "signature": ..., "totalEvents": ..., "v": 1}

``signature`` is the digest's own ECDSA signature, which signs the SHA-256
``digestSha256`` (see ``keys.crypto.signatures.verify_prehashed``): a line
can be checked with the public key alone, and a forged line cannot be.
``totalEvents`` counts the events of every digest up to this one.

Writers hold an exclusive ``flock`` on the file, append with ``O_APPEND``
and ``fsync``; no Django imports, so the format is easy to read elsewhere.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit import canonical

VERSION = 1
TAIL_BYTES = 64 * 1024  # a line is ~600 bytes: the newest line is in the last 64 KiB


class AnchorError(Exception):
    """The anchor file cannot be read or holds a line that is not an anchor line."""


@dataclass(frozen=True)
class AnchorLine:
    """One anchored digest."""

    sequence: int
    first_event_id: int
    last_event_id: int
    event_count: int
    total_events: int
    digest_sha256: str
    previous_digest_sha256: str
    key_fingerprint: str
    signature: str
    digest_end_time: str
    anchored_at: str

    def to_bytes(self) -> bytes:
        return (
            canonical.canonical_json(
                {
                    "v": VERSION,
                    "sequence": self.sequence,
                    "firstEventId": self.first_event_id,
                    "lastEventId": self.last_event_id,
                    "eventCount": self.event_count,
                    "totalEvents": self.total_events,
                    "digestSha256": self.digest_sha256,
                    "previousDigestSha256": self.previous_digest_sha256,
                    "keyFingerprint": self.key_fingerprint,
                    "signature": self.signature,
                    "digestEndTime": self.digest_end_time,
                    "anchoredAt": self.anchored_at,
                }
            )
            + b"\n"
        )

    @classmethod
    def parse(cls, raw: bytes, where: str) -> AnchorLine:
        try:
            doc: dict[str, Any] = json.loads(raw)
            line = cls(
                sequence=_int(doc["sequence"]),
                first_event_id=_int(doc["firstEventId"]),
                last_event_id=_int(doc["lastEventId"]),
                event_count=_int(doc["eventCount"]),
                total_events=_int(doc["totalEvents"]),
                digest_sha256=str(doc["digestSha256"]),
                previous_digest_sha256=str(doc["previousDigestSha256"]),
                key_fingerprint=str(doc["keyFingerprint"]),
                signature=str(doc["signature"]),
                digest_end_time=str(doc["digestEndTime"]),
                anchored_at=str(doc["anchoredAt"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise AnchorError(f"{where} is not an anchor line") from exc
        if doc.get("v") != VERSION:
            raise AnchorError(f"{where} has an unknown version {doc.get('v')!r}")
        return line


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("not an integer")
    return value


def iter_lines(path: Path) -> Iterator[AnchorLine]:
    """Every line of the anchor, first to last; nothing if the file does not exist.

    A last line without its newline (a write cut short) is an ``AnchorError``
    like any other damage: the anchor is evidence, so it is never repaired
    silently.
    """
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return
    except OSError as exc:
        raise AnchorError(f"{path} cannot be read: {exc.strerror}") from exc
    with fh:
        for n, raw in enumerate(fh, start=1):
            if not raw.endswith(b"\n"):
                raise AnchorError(f"{path} line {n} is cut short (no newline)")
            yield AnchorLine.parse(raw, f"{path} line {n}")


def exists(path: Path) -> bool:
    """The anchor file exists and holds at least one byte."""
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False


def _last_from_fd(fd: int, where: Path) -> AnchorLine | None:
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    start = max(0, size - TAIL_BYTES)
    data = os.pread(fd, size - start, start)
    if not data.endswith(b"\n"):
        raise AnchorError(f"{where}: its last line is cut short (no newline)")
    lines = data[:-1].split(b"\n")
    if start > 0 and len(lines) < 2:
        raise AnchorError(f"{where}: its last line is longer than {TAIL_BYTES} bytes")
    return AnchorLine.parse(lines[-1], f"{where} (last line)")


def read_last(path: Path) -> AnchorLine | None:
    """The newest line, or None when the file is missing or empty."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AnchorError(f"{path} cannot be read: {exc.strerror}") from exc
    try:
        return _last_from_fd(fd, path)
    except OSError as exc:
        raise AnchorError(f"{path} cannot be read: {exc.strerror}") from exc
    finally:
        os.close(fd)


class Writer:
    """The anchor opened for appending, under an exclusive lock (see ``open_for_append``)."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path

    def last(self) -> AnchorLine | None:
        return _last_from_fd(self.fd, self.path)

    def append(self, lines: Iterable[AnchorLine]) -> int:
        """Append ``lines`` in one write and fsync; the number of lines written."""
        data = b"".join(line.to_bytes() for line in lines)
        if not data:
            return 0
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        os.fsync(self.fd)
        return data.count(b"\n")


@contextmanager
def open_for_append(path: Path, *, create: bool) -> Iterator[Writer]:
    """Lock the anchor (``flock``) for appending; create it (and its directory) only if ``create``.

    Raises ``FileNotFoundError`` when the file is missing and ``create`` is
    false: a missing anchor is never recreated behind the operator's back.
    """
    flags = os.O_RDWR | os.O_APPEND
    created = False
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        flags |= os.O_CREAT
        created = True
    fd = os.open(path, flags, 0o640)
    try:
        if created:
            # The new directory entry must survive a crash too.
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield Writer(fd, path)
    finally:
        os.close(fd)  # closing releases the lock
