"""Keeping the audit anchor (``audit.anchor``) in step with the digest chain.

The sealer calls ``anchor_sync`` before each round and after each new
digest commits. It appends the digests the anchor does not hold yet, in
order, each checked (signature, link to the anchored head) before it is
written; and it refuses, with an error the seal records, when the database
no longer holds the anchored head: sealing on top of a rewound or rewritten
chain would bless it.

A missing anchor is recreated only for the very first digest. A trail that
has digests but no anchor (a deployment upgraded to the anchor, or a
removed file) is anchored by ``audit_anchor_init`` (``manage.py
anchor_audit``), which first verifies the whole trail.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from audit import anchor, canonical
from audit.models import AuditDigest, SigningKey
from audit.services.recording import audited
from audit.services.signing import EVENT_SOURCE
from keys.crypto import signatures
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import InvalidState

ANCHOR_EVENT = "AnchorAuditTrail"


def anchor_path() -> Path:
    return Path(settings.KMSWEB_AUDIT_ANCHOR_FILE)


def sink_cursor_path() -> Path:
    """Where ``audit.services.anchor_sink`` keeps how far the operator's sink has acknowledged the anchor."""
    path = anchor_path()
    return path.with_name(path.name + ".sent")


def digest_valid(digest: AuditDigest, public_pem: str | None) -> bool:
    """The digest's columns are the document its signature signs, and ``digest_sha256`` is that document's hash."""
    body = canonical.canonical_json(canonical.digest_document_of(digest))
    try:
        if public_pem is None:
            return False
        signatures.verify(public_pem, base64.b64decode(digest.signature), body)
    except (signatures.SignatureError, ValueError):
        return False
    return hashlib.sha256(body).hexdigest() == digest.digest_sha256


def line_valid(line: anchor.AnchorLine, public_pem: str | None) -> bool:
    """The line's signature is a digest signature over its ``digestSha256`` by ``public_pem``."""
    try:
        if public_pem is None:
            return False
        signatures.verify_prehashed(public_pem, base64.b64decode(line.signature), bytes.fromhex(line.digest_sha256))
    except (signatures.SignatureError, ValueError):
        return False
    return True


def _missing(path: Path) -> InvalidState:
    return InvalidState(
        f"The audit anchor {path} is missing or empty, but the database holds signed digests: sealing stops. "
        "If this deployment has never had an anchor, run `manage.py anchor_audit` (it verifies the trail first); "
        "otherwise the anchor was removed: investigate with `manage.py verify_audit`."
    )


def _line_of(digest: AuditDigest, total: int, now: str) -> anchor.AnchorLine:
    return anchor.AnchorLine(
        sequence=digest.sequence,
        first_event_id=digest.first_event_id,
        last_event_id=digest.last_event_id,
        event_count=digest.event_count,
        total_events=total,
        digest_sha256=digest.digest_sha256,
        previous_digest_sha256=digest.previous_digest_sha256,
        key_fingerprint=digest.key_fingerprint,
        signature=digest.signature,
        digest_end_time=canonical.iso(digest.digest_end_time),
        anchored_at=now,
    )


def _append_after(writer: anchor.Writer, head: anchor.AnchorLine | None) -> int:
    """Append every digest after ``head`` (the anchor's newest line), after checking the database still holds it."""
    if head is not None:
        held = AuditDigest.objects.filter(sequence=head.sequence).defer("leaves").first()
        if held is None:
            raise InvalidState(
                f"The audit anchor records digest {head.sequence} (events through id {head.last_event_id}), "
                "but the database does not hold it: digests were deleted. Sealing stops; run `manage.py verify_audit`."
            )
        if held.digest_sha256 != head.digest_sha256:
            raise InvalidState(
                f"Digest {head.sequence} in the database is not the one the audit anchor records: the chain was "
                "rewritten. Sealing stops; run `manage.py verify_audit`."
            )
    sequence = head.sequence if head else 0
    previous = head.digest_sha256 if head else ""
    total = head.total_events if head else 0
    keys = dict(SigningKey.objects.values_list("fingerprint", "public_pem"))
    now = canonical.iso(timezone.now())
    lines = []
    for digest in AuditDigest.objects.filter(sequence__gt=sequence).order_by("sequence").defer("leaves").iterator():
        if (
            digest.sequence != sequence + 1
            or digest.previous_digest_sha256 != previous
            or not digest_valid(digest, keys.get(digest.key_fingerprint))
        ):
            raise InvalidState(
                f"Digest {digest.sequence} does not verify or does not chain to digest {sequence}: "
                "kmsweb will not anchor it. Run `manage.py verify_audit`."
            )
        total += digest.event_count
        lines.append(_line_of(digest, total, now))
        sequence, previous = digest.sequence, digest.digest_sha256
    return writer.append(lines)


def anchor_sync(*, sealed: AuditDigest | None = None) -> int:
    """Append the digests the anchor lacks; raise ``InvalidState`` if the database no longer holds its head.

    ``sealed`` is the digest this round just committed: the anchor file is
    created only when that is digest 1. Returns the number of lines written.
    """
    path = anchor_path()
    first = sealed is not None and sealed.sequence == 1
    if not anchor.exists(path) and not first:
        if AuditDigest.objects.exists():
            raise _missing(path)
        return 0
    try:
        with anchor.open_for_append(path, create=first) as writer:
            head = writer.last()
            if head is None and not first:
                raise _missing(path)
            return _append_after(writer, head)
    except anchor.AnchorError as exc:
        raise InvalidState(f"The audit anchor cannot be used: {exc}. Sealing stops.") from exc
    except FileNotFoundError as exc:
        raise _missing(path) from exc
    except OSError as exc:
        raise InvalidState(f"The audit anchor {path} cannot be written: {exc.strerror}. Sealing stops.") from exc


def audit_anchor_init(*, caller: Caller) -> int:
    """Write the anchor of a trail that has none: every digest, after the whole trail verifies.

    Refused when the anchor already holds a line (an anchor is never
    rewritten: move a damaged one aside by hand, after investigating) or
    when the trail fails verification. The sink (if any) is sent the new
    anchor from its first line. Recorded as ``AnchorAuditTrail``; returns
    the number of digests anchored.
    """
    from audit.verification import audit_verify

    path = anchor_path()
    with audited(caller, ANCHOR_EVENT, event_source=EVENT_SOURCE, atomic=False) as op:
        if anchor.exists(path):
            raise InvalidState(f"The audit anchor {path} already exists: kmsweb never rewrites it.")
        report = audit_verify(check_anchor=False)
        if not report.ok:
            raise InvalidState(
                f"The audit trail fails verification ({report.problems[0].message}): kmsweb will not anchor it."
            )
        try:
            with anchor.open_for_append(path, create=True) as writer:
                count = _append_after(writer, None)
            # A new anchor is sent to the sink from its first line.
            sink_cursor_path().unlink(missing_ok=True)
        except OSError as exc:
            raise InvalidState(f"The audit anchor {path} cannot be written: {exc.strerror}") from exc
        op.response_elements = {"AnchorFile": str(path), "AnchoredDigests": count}
    return count
