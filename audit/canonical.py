"""The canonical forms that digests, exports and their verifiers agree on.

No Django imports: offline verification (``verify_audit_export``) and the
sealing job must compute the very same bytes.

* An event's record is CloudTrail's record shape plus a ``kmsweb`` member
  (origin and the denormalised search columns, so those are sealed too).
* Canonical JSON: keys sorted, no whitespace, UTF-8 without escaping
  non-ASCII. An event's leaf hash is the SHA-256 of its canonical record;
  a JSON Lines export is exactly these canonical records, one per line.
* A digest's ``eventsSha256`` is the SHA-256 of its events' leaf hashes
  concatenated in id order, so a complete JSON Lines export of a digest's
  range can be checked against the signed digest without the database.
  The digest row also keeps (id, leaf hash) pairs, only to say *which*
  event changed when verification fails.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

# The columns a record is built from, in this order (``values_list``).
EVENT_COLUMNS = (
    "id",
    "event_id",
    "event_time",
    "event_version",
    "event_source",
    "event_name",
    "event_type",
    "aws_region",
    "source_ip",
    "user_agent",
    "user_identity",
    "request_parameters",
    "response_elements",
    "additional_event_data",
    "error_code",
    "error_message",
    "request_id",
    "read_only",
    "resources",
    "management_event",
    "event_category",
    "recipient_account_id",
    "origin",
    "key_id",
    "principal_arn",
)
DENIED = "AccessDeniedException"
OUTCOMES = ("success", "denied", "error")
LEAF = struct.Struct(">Q32s")
ZERO = timedelta(0)
SIGNATURE_ALGORITHM = "SHA256withECDSA"
DIGEST_VERSION = "1"


def iso(moment: datetime) -> str:
    """UTC ISO 8601 with microseconds and a ``Z`` (the canonical time form)."""
    if moment.utcoffset() != ZERO:
        moment = moment.astimezone(UTC)
    # isoformat is several times faster than strftime, and this runs per event.
    return moment.isoformat(timespec="microseconds")[:26] + "Z"


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def canonical_json(value: Any) -> bytes:
    """Keys sorted, no whitespace, UTF-8: byte for byte what
    ``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``
    gives (orjson is used for speed; a test holds the two equal)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        # What orjson refuses (integers beyond 64 bits, lone surrogates), the standard library writes.
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
            "utf-8", "surrogatepass"
        )


# The JSON columns, by position in EVENT_COLUMNS: bulk readers fetch them as
# text and decode them here (much faster than the ORM's per-field decoding).
JSON_POSITIONS = (10, 11, 12, 13, 18)


def decode_json_columns(row: Sequence[Any]) -> list[Any]:
    values = list(row)
    for i in JSON_POSITIONS:
        if values[i] is not None:
            values[i] = orjson.loads(values[i])
    return values


def outcome(error_code: str) -> str:
    if not error_code:
        return "success"
    return "denied" if error_code == DENIED else "error"


def record(row: Sequence[Any]) -> dict[str, Any]:
    """The CloudTrail-shaped record of one event row (columns as ``EVENT_COLUMNS``)."""
    (
        _id,
        event_id,
        event_time,
        event_version,
        event_source,
        event_name,
        event_type,
        aws_region,
        source_ip,
        user_agent,
        user_identity,
        request_parameters,
        response_elements,
        additional_event_data,
        error_code,
        error_message,
        request_id,
        read_only,
        resources,
        management_event,
        event_category,
        recipient_account_id,
        origin,
        key_id,
        principal_arn,
    ) = row
    out: dict[str, Any] = {
        "eventVersion": event_version,
        "eventTime": iso(event_time),
        "eventSource": event_source,
        "eventName": event_name,
        "awsRegion": aws_region,
        "sourceIPAddress": source_ip,
        "userAgent": user_agent,
        "userIdentity": user_identity,
        "requestParameters": request_parameters,
        "responseElements": response_elements,
        "requestID": request_id,
        "eventID": str(event_id),
        "readOnly": read_only,
        "resources": resources,
        "eventType": event_type,
        "managementEvent": management_event,
        "eventCategory": event_category,
        "recipientAccountId": recipient_account_id,
        "kmsweb": {"origin": origin, "keyId": key_id, "principalArn": principal_arn},
    }
    if additional_event_data is not None:
        out["additionalEventData"] = additional_event_data
    if error_code:
        out["errorCode"] = error_code
    if error_message:
        out["errorMessage"] = error_message
    return out


def leaf_hash(record_bytes: bytes) -> bytes:
    return hashlib.sha256(record_bytes).digest()


def events_root(hashes: Iterable[bytes]) -> str:
    """``eventsSha256``: the SHA-256 over the leaf hashes in order, hex."""
    root = hashlib.sha256()
    for digest in hashes:
        root.update(digest)
    return root.hexdigest()


def pack_leaves(leaves: Iterable[tuple[int, bytes]]) -> bytes:
    return b"".join(LEAF.pack(event_id, digest) for event_id, digest in leaves)


def unpack_leaves(blob: bytes) -> Iterator[tuple[int, bytes]]:
    if len(blob) % LEAF.size:
        raise ValueError("a digest's leaf list is not a whole number of entries")
    for offset in range(0, len(blob), LEAF.size):
        yield LEAF.unpack_from(blob, offset)


def digest_document(
    *,
    sequence: int,
    first_event_id: int,
    last_event_id: int,
    oldest_event_time: datetime,
    newest_event_time: datetime,
    event_count: int,
    events_sha256: str,
    previous_digest_sha256: str,
    previous_digest_signature: str,
    digest_start_time: datetime,
    digest_end_time: datetime,
    key_fingerprint: str,
) -> dict[str, Any]:
    """The signed part of a digest, named as in CloudTrail's digest files where they overlap."""
    return {
        "digestVersion": DIGEST_VERSION,
        "sequence": sequence,
        "firstEventId": first_event_id,
        "lastEventId": last_event_id,
        "oldestEventTime": iso(oldest_event_time),
        "newestEventTime": iso(newest_event_time),
        "eventCount": event_count,
        "eventsHashAlgorithm": "SHA-256",
        "eventsSha256": events_sha256,
        "previousDigestHashAlgorithm": "SHA-256",
        "previousDigestHashValue": previous_digest_sha256,
        "previousDigestSignature": previous_digest_signature,
        "digestStartTime": iso(digest_start_time),
        "digestEndTime": iso(digest_end_time),
        "digestPublicKeyFingerprint": key_fingerprint,
        "digestSignatureAlgorithm": SIGNATURE_ALGORITHM,
    }


def digest_document_of(row: Mapping[str, Any] | Any) -> dict[str, Any]:
    """``digest_document`` of an ``AuditDigest`` (or anything with its attributes)."""
    get = row.__getitem__ if isinstance(row, Mapping) else lambda name: getattr(row, name)
    return digest_document(
        sequence=get("sequence"),
        first_event_id=get("first_event_id"),
        last_event_id=get("last_event_id"),
        oldest_event_time=get("oldest_event_time"),
        newest_event_time=get("newest_event_time"),
        event_count=get("event_count"),
        events_sha256=get("events_sha256"),
        previous_digest_sha256=get("previous_digest_sha256"),
        previous_digest_signature=get("previous_digest_signature"),
        digest_start_time=get("digest_start_time"),
        digest_end_time=get("digest_end_time"),
        key_fingerprint=get("key_fingerprint"),
    )
