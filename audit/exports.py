"""Export bundles: the events of a filtered range, a signed manifest, and
the offline check of both.

A bundle is a directory::

    events.jsonl | events.json | events.csv | report.pdf   the export itself
    digests.jsonl      the signed digests covering the exported events
    public-keys.json   every public key those digests and the manifest name
    public-key.pem     the key that signed the manifest (for openssl)
    manifest.json      what was exported, the SHA-256 of every file above
    manifest.sig       DER ECDSA P-256/SHA-256 signature of manifest.json

Writing streams the events (``iterator``) so memory stays flat whatever
the range. ``verify_bundle`` needs no database: an external auditor runs it
(or plain openssl, see docs/AUDIT.md) on the directory alone.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from audit import canonical
from keys.crypto import signatures

FORMATS = {"jsonl": "events.jsonl", "cloudtrail": "events.json", "csv": "events.csv", "pdf": "report.pdf"}
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
PUBLIC_KEY = "public-key.pem"
DIGESTS = "digests.jsonl"
KEYS = "public-keys.json"
MANIFEST_VERSION = "1"
PROGRESS_EVERY = 5000
CSV_COLUMNS = (
    "eventTime",
    "eventID",
    "eventName",
    "eventSource",
    "origin",
    "outcome",
    "errorCode",
    "errorMessage",
    "principalArn",
    "accountId",
    "accessKeyId",
    "sourceIPAddress",
    "userAgent",
    "awsRegion",
    "keyId",
    "readOnly",
    "requestID",
    "requestParameters",
    "responseElements",
    "additionalEventData",
    "resources",
)


class BundleError(Exception):
    """A bundle cannot be written (nothing was left behind)."""


# -- writing ---------------------------------------------------------------------


@dataclass
class Stats:
    """What the writer saw while streaming the events."""

    count: int = 0
    first_id: int | None = None
    last_id: int | None = None
    oldest: datetime | None = None
    newest: datetime | None = None

    def add(self, row: Sequence[Any]) -> None:
        self.count += 1
        if self.first_id is None:
            self.first_id = row[0]
        self.last_id = row[0]
        moment = row[2]
        if self.oldest is None or moment < self.oldest:
            self.oldest = moment
        if self.newest is None or moment > self.newest:
            self.newest = moment


def _dumps(value: Any) -> str:
    return "" if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _csv_row(rec: dict[str, Any]) -> list[Any]:
    who = rec.get("userIdentity") or {}
    extra = rec["kmsweb"]
    return [
        rec["eventTime"],
        rec["eventID"],
        rec["eventName"],
        rec["eventSource"],
        extra["origin"],
        canonical.outcome(rec.get("errorCode", "")),
        rec.get("errorCode", ""),
        rec.get("errorMessage", ""),
        extra["principalArn"],
        who.get("accountId", ""),
        who.get("accessKeyId", ""),
        rec["sourceIPAddress"],
        rec["userAgent"],
        rec["awsRegion"],
        extra["keyId"],
        "true" if rec["readOnly"] else "false",
        rec["requestID"],
        _dumps(rec.get("requestParameters")),
        _dumps(rec.get("responseElements")),
        _dumps(rec.get("additionalEventData")),
        _dumps(rec.get("resources")),
    ]


def write_events(
    out: BinaryIO,
    fmt: str,
    rows: Iterable[Sequence[Any]],
    *,
    progress: Callable[[int], object] | None = None,
) -> Stats:
    """Stream ``rows`` (columns as ``canonical.EVENT_COLUMNS``) to ``out`` in ``fmt``."""
    stats = Stats()
    dumps, record = canonical.canonical_json, canonical.record
    if fmt == "csv":
        text = _TextSink(out)
        writer = csv.writer(text, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
    elif fmt == "cloudtrail":
        out.write(b'{"Records":[')
    for row in rows:
        rec = record(row)
        if fmt == "csv":
            writer.writerow(_csv_row(rec))
        else:
            line = dumps(rec)
            if fmt == "jsonl":
                out.write(line + b"\n")
            else:
                out.write(b"," + line if stats.count else line)
        stats.add(row)
        if progress is not None and stats.count % PROGRESS_EVERY == 0:
            progress(stats.count)
    if fmt == "cloudtrail":
        out.write(b"]}\n")
    if progress is not None:
        progress(stats.count)
    return stats


class _TextSink:
    """A minimal text writer over a binary file, for ``csv.writer``."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out

    def write(self, text: str) -> int:
        self.out.write(text.encode("utf-8"))
        return len(text)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class DigestLine:
    """One covering digest as written to ``digests.jsonl``."""

    document: dict[str, Any]
    digest_sha256: str
    signature: str

    def line(self) -> bytes:
        return canonical.canonical_json(
            {"document": self.document, "digestSha256": self.digest_sha256, "signature": self.signature}
        )


@dataclass
class Signer:
    """How a bundle gets signed: the key's PEM and fingerprint, and a function that signs bytes."""

    fingerprint: str
    public_pem: str
    sign: Callable[[bytes], bytes]


@dataclass
class Bundle:
    """A written bundle."""

    path: Path
    manifest: dict[str, Any]
    stats: Stats


def prepare_dir(out_dir: Path) -> bool:
    """Create ``out_dir`` (or accept an empty one); True if it was created here."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise BundleError(f"{out_dir} exists and is not a directory.")
        if any(out_dir.iterdir()):
            raise BundleError(f"{out_dir} is not empty: choose a new directory for the export.")
        return False
    out_dir.mkdir(parents=True)
    return True


def write_bundle(
    *,
    out_dir: Path,
    fmt: str,
    rows: Iterable[Sequence[Any]] | None,
    digests: Callable[[Stats], Iterable[DigestLine]],
    public_keys: dict[str, str],
    signer: Signer,
    manifest_fields: dict[str, Any],
    write_data: Callable[[BinaryIO], Stats] | None = None,
    progress: Callable[[int], object] | None = None,
    complete: bool = False,
) -> Bundle:
    """Write the data file, the covering digests, the keys and the signed manifest.

    ``rows`` streams the events for the event formats; ``write_data`` writes
    the PDF report instead. On any failure the directory is removed (or
    emptied, if it existed), so a failed export leaves nothing behind.
    """
    if fmt not in FORMATS:
        raise BundleError(f"Unknown format '{fmt}': use one of {', '.join(FORMATS)}.")
    created = prepare_dir(out_dir)
    try:
        data_name = FORMATS[fmt]
        with (out_dir / data_name).open("wb") as fh:
            if write_data is not None:
                stats = write_data(fh)
            else:
                assert rows is not None
                stats = write_events(fh, fmt, rows, progress=progress)
        used_keys = {signer.fingerprint}
        digest_summary: dict[str, Any] = {"count": 0, "firstSequence": None, "lastSequence": None}
        with (out_dir / DIGESTS).open("wb") as fh:
            for d in digests(stats):
                fh.write(d.line() + b"\n")
                used_keys.add(d.document["digestPublicKeyFingerprint"])
                digest_summary["count"] += 1
                digest_summary["firstSequence"] = digest_summary["firstSequence"] or d.document["sequence"]
                digest_summary["lastSequence"] = d.document["sequence"]
        keys = [{"fingerprint": fp, "publicKeyPem": public_keys[fp]} for fp in sorted(used_keys) if fp in public_keys]
        (out_dir / KEYS).write_bytes(json.dumps(keys, indent=2).encode() + b"\n")
        (out_dir / PUBLIC_KEY).write_text(signer.public_pem, encoding="ascii")
        files = [
            {"name": name, "sha256": file_sha256(out_dir / name), "bytes": (out_dir / name).stat().st_size}
            for name in sorted((data_name, DIGESTS, KEYS, PUBLIC_KEY))
        ]
        manifest = {
            "manifestVersion": MANIFEST_VERSION,
            "generator": "kmsweb",
            **manifest_fields,
            "format": fmt,
            "complete": complete,
            "events": {
                "count": stats.count,
                "firstEventId": stats.first_id,
                "lastEventId": stats.last_id,
                "oldestEventTime": canonical.iso(stats.oldest) if stats.oldest else None,
                "newestEventTime": canonical.iso(stats.newest) if stats.newest else None,
            },
            "digests": digest_summary,
            "files": files,
            "signingKeyFingerprint": signer.fingerprint,
            "signatureAlgorithm": canonical.SIGNATURE_ALGORITHM,
            "signatureFile": SIGNATURE,
        }
        _write_signed_manifest(out_dir, manifest, signer)
    except BaseException:
        _discard(out_dir, created=created)
        raise
    return Bundle(path=out_dir, manifest=manifest, stats=stats)


def _write_signed_manifest(out_dir: Path, manifest: dict[str, Any], signer: Signer) -> None:
    """manifest.json (sorted, indented, UTF-8) and manifest.sig, its signature."""
    body = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n"
    (out_dir / MANIFEST).write_bytes(body)
    (out_dir / SIGNATURE).write_bytes(signer.sign(body))


def _discard(out_dir: Path, *, created: bool) -> None:
    """Undo a bundle that failed half-way: remove the directory it made, or empty the one it was given."""
    if created:
        shutil.rmtree(out_dir, ignore_errors=True)
    else:
        for child in out_dir.iterdir():
            child.unlink()


def write_signed_files(
    *,
    out_dir: Path,
    files: Sequence[tuple[str, Callable[[BinaryIO], object]]],
    signer: Signer,
    manifest_fields: dict[str, Any],
) -> dict[str, Any]:
    """A report bundle: the given files, the signer's public key, and the signed manifest.

    The same manifest and signature as an event export (``verify_bundle``,
    ``manage.py verify_audit_export`` and openssl check it alike), without
    events or digests: for reports computed from kmsweb's state (the
    compliance report, a campaign's evidence). On any failure the
    directory is removed, or emptied if it existed.
    """
    created = prepare_dir(out_dir)
    try:
        for name, write in files:
            if os.sep in name or name.startswith(".") or name in (MANIFEST, SIGNATURE, PUBLIC_KEY):
                raise BundleError(f"{name}: not a report file name")
            with (out_dir / name).open("wb") as fh:
                write(fh)
        (out_dir / PUBLIC_KEY).write_text(signer.public_pem, encoding="ascii")
        names = sorted([name for name, _ in files] + [PUBLIC_KEY])
        manifest = {
            "manifestVersion": MANIFEST_VERSION,
            "generator": "kmsweb",
            **manifest_fields,
            "files": [
                {"name": name, "sha256": file_sha256(out_dir / name), "bytes": (out_dir / name).stat().st_size}
                for name in names
            ],
            "signingKeyFingerprint": signer.fingerprint,
            "signatureAlgorithm": canonical.SIGNATURE_ALGORITHM,
            "signatureFile": SIGNATURE,
        }
        _write_signed_manifest(out_dir, manifest, signer)
    except BaseException:
        _discard(out_dir, created=created)
        raise
    return manifest


# -- verifying (offline) -----------------------------------------------------------


@dataclass
class BundleCheck:
    """The outcome of ``verify_bundle``: problems name the file they are about."""

    problems: list[str] = field(default_factory=list)
    manifest: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        for line in fh:
            yield line.rstrip(b"\n")


def verify_bundle(directory: Path, *, trusted_fingerprints: set[str] | None = None) -> BundleCheck:
    """Check a bundle's signature, every file's hash and size, and the covering digests.

    With ``trusted_fingerprints`` (from ``GET /audit/public-keys``, obtained
    separately), the manifest must be signed by one of them; otherwise the
    bundle's own public key is used and its fingerprint reported.
    """
    check = BundleCheck()
    directory = Path(directory)
    for name in (MANIFEST, SIGNATURE, PUBLIC_KEY):
        if not (directory / name).is_file():
            check.problems.append(f"{name}: missing from {directory}")
    if check.problems:
        return check
    body = (directory / MANIFEST).read_bytes()
    public_pem = (directory / PUBLIC_KEY).read_bytes()
    try:
        fingerprint = signatures.public_key_fingerprint(public_pem)
    except signatures.SignatureError as exc:
        check.problems.append(f"{PUBLIC_KEY}: {exc}")
        return check
    try:
        signatures.verify(public_pem, (directory / SIGNATURE).read_bytes(), body)
    except signatures.SignatureError:
        check.problems.append(
            f"{MANIFEST}: the signature in {SIGNATURE} does not match (the manifest or its signature was changed)"
        )
        return check
    try:
        manifest = json.loads(body)
    except ValueError:
        check.problems.append(f"{MANIFEST}: not valid JSON")
        return check
    check.manifest = manifest
    if manifest.get("signingKeyFingerprint") != fingerprint:
        check.problems.append(f"{PUBLIC_KEY}: its fingerprint is not the one the manifest names")
    if trusted_fingerprints is not None and fingerprint not in trusted_fingerprints:
        check.problems.append(f"{PUBLIC_KEY}: key {fingerprint} is not one of the trusted audit signing keys")
    check.notes.append(f"manifest signed by key {fingerprint}")
    listed = {f["name"] for f in manifest.get("files", [])}
    for entry in manifest.get("files", []):
        name = entry["name"]
        path = directory / name
        if os.sep in name or name.startswith("."):
            check.problems.append(f"{name}: not a plain file name")
            continue
        if not path.is_file():
            check.problems.append(f"{name}: missing")
            continue
        size = path.stat().st_size
        if size < entry["bytes"]:
            check.problems.append(f"{name}: truncated ({size} of {entry['bytes']} bytes)")
        elif size != entry["bytes"]:
            check.problems.append(f"{name}: {size} bytes, the manifest says {entry['bytes']}")
        elif file_sha256(path) != entry["sha256"]:
            check.problems.append(f"{name}: SHA-256 does not match the manifest (the file was changed)")
    for child in sorted(directory.iterdir()):
        if child.name not in listed | {MANIFEST, SIGNATURE}:
            check.problems.append(f"{child.name}: not listed in the manifest")
    if check.problems:
        return check
    if DIGESTS in listed:
        _verify_digests(directory, manifest, check)
    else:
        # A report bundle (``write_signed_files``): no events, so no digests to check.
        check.notes.append(f"{len(listed)} files match the signed manifest")
    return check


def _verify_digests(directory: Path, manifest: dict[str, Any], check: BundleCheck) -> None:
    keys = {k["fingerprint"]: k["publicKeyPem"] for k in json.loads((directory / KEYS).read_bytes())}
    documents: list[dict[str, Any]] = []
    previous: dict[str, Any] | None = None
    for n, raw in enumerate(_lines(directory / DIGESTS), start=1):
        entry = json.loads(raw)
        doc = entry["document"]
        body = canonical.canonical_json(doc)
        pem = keys.get(doc["digestPublicKeyFingerprint"])
        where = f"{DIGESTS} line {n} (digest {doc.get('sequence')})"
        try:
            if pem is None:
                raise signatures.SignatureError("no such key")
            signatures.verify(pem, base64.b64decode(entry["signature"]), body)
        except (signatures.SignatureError, ValueError):
            check.problems.append(f"{where}: signature does not verify")
            return
        if hashlib.sha256(body).hexdigest() != entry["digestSha256"]:
            check.problems.append(f"{where}: hash does not match")
            return
        if previous is not None and doc["sequence"] == previous["document"]["sequence"] + 1:
            if doc["previousDigestHashValue"] != previous["digestSha256"]:
                check.problems.append(f"{where}: does not chain to digest {previous['document']['sequence']}")
                return
        previous = entry
        documents.append(doc)
    check.notes.append(f"{len(documents)} covering digests verified")
    if manifest.get("complete") and manifest.get("format") == "jsonl":
        _verify_complete(directory / FORMATS["jsonl"], documents, check)


def _verify_complete(path: Path, documents: list[dict[str, Any]], check: BundleCheck) -> None:
    """A complete bundle holds exactly its digests' events: recompute each digest's events hash."""
    lines = _lines(path)
    for doc in documents:
        hashes = []
        for _ in range(doc["eventCount"]):
            line = next(lines, None)
            if line is None:
                check.problems.append(f"{path.name}: ends before digest {doc['sequence']}'s events")
                return
            hashes.append(canonical.leaf_hash(line))
        if canonical.events_root(hashes) != doc["eventsSha256"]:
            check.problems.append(f"{path.name}: the events of digest {doc['sequence']} do not match its signed hash")
            return
    if next(lines, None) is not None:
        check.problems.append(f"{path.name}: holds events beyond its last digest")
        return
    check.notes.append(f"every event matches its signed digest ({len(documents)} digests)")
