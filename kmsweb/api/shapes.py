"""Input validation and output serialization against botocore's KMS model.

Pure Python (no Django). The model is the one boto3 itself uses, so what we
accept and what we emit stay in step with the SDKs by construction.

Input errors come in two kinds, in the order AWS's JSON protocol raises them:

* ``SerializationException`` - the JSON cannot be turned into the input shape
  at all: the body is not an object, a value has the wrong JSON type (a string
  where an integer belongs, an object where a list belongs, ...), an integer
  does not fit, or a blob is not valid base64. AWS deserializes before it
  validates, so one such problem wins over any number of constraint
  violations, and it stops at the first. Messages follow the AWS form
  ("STRING_VALUE can not be converted to an Integer", "Start of structure or
  map found where not expected."); the blob message is kmsweb's own.
* ``ValidationException`` - the value deserialized but breaks a constraint of
  the model: a required member is missing, a string is not in its enum, a
  length or range bound or a pattern is broken. All of them are reported in
  one message, ``"N validation error(s) detected: ...; ..."``, each as
  ``Value '<v>' at '<path>' failed to satisfy constraint: <why>``. The path
  uses lowerCamelCase member names, 1-based ``.N.member`` for list items
  (``tags.1.member.tagKey``); constraints on map keys and values are reported
  at the map (``Map value must satisfy constraint: [...]``). The value is left
  out for blobs and sensitive members, as AWS does ("Value at 'plaintext'").

JSON ``null`` counts as absent. Members the model does not know are ignored,
at every level, as AWS does.

Beyond the model, kmsweb refuses what it cannot store or serve, for every
operation alike: U+0000 in any string except an encryption context's keys
and values at the top of a request (they are never stored, and AWS accepts
them there), and members the model leaves optional because of an
alternative kmsweb does not offer (a service principal, a Nitro Enclaves
recipient), listed in ``KMSWEB_REQUIRED``. :func:`parse_body` decodes the
body first: a body that is not JSON, nests deeper than the decoder goes, or
holds a lone UTF-16 surrogate is a ``SerializationException``.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any

from botocore.model import OperationModel, ServiceModel, Shape
from botocore.session import get_session

__all__ = [
    "SERIALIZATION_EXCEPTION",
    "VALIDATION_EXCEPTION",
    "ShapeError",
    "KMSWEB_REQUIRED",
    "error_shape_names",
    "operation_names",
    "parse_input",
    "encode_output",
    "json_bytes",
    "serialize_output",
    "service_model",
]

VALIDATION_EXCEPTION = "ValidationException"
SERIALIZATION_EXCEPTION = "SerializationException"
UNKNOWN_OPERATION_EXCEPTION = "UnknownOperationException"

# The model's "integer" and "long" are Java's int and long; a JSON number that
# does not fit cannot be deserialized, so it is a serialization error.
_INT_BOUNDS = {"integer": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
# How the AWS messages name the target types ("... can not be converted to an
# Integer").
_JAVA_TYPE = {
    "string": "a String",
    "integer": "an Integer",
    "long": "a Long",
    "boolean": "a Boolean",
    "blob": "a ByteBuffer",
    "timestamp": "a Date",
    "float": "a Float",
    "double": "a Double",
    "structure": "a structure",
    "list": "a List",
    "map": "a Map",
}


# Members kmsweb needs although the model leaves them optional: the model
# allows an alternative kmsweb does not serve (a Recipient's attestation),
# and without the member there is nothing to act on. Refused as a missing
# required member.
KMSWEB_REQUIRED: dict[str, frozenset[str]] = {
    "Decrypt": frozenset({"CiphertextBlob"}),
    "ReEncrypt": frozenset({"CiphertextBlob"}),
}
# The one map whose strings may hold U+0000 (at the top of a request only:
# the same shape inside a grant's Constraints is stored).
_CONTEXT_SHAPE = "EncryptionContextType"
_NUL_REASON = "Member must not contain the NUL character (U+0000)"


class ShapeError(Exception):
    """A request body does not fit the operation's input shape.

    ``code`` is ``ValidationException`` or ``SerializationException`` (or
    ``UnknownOperationException`` for an operation the model lacks);
    ``message`` is the AWS-style message; ``status`` is always 400.
    """

    status = 400

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@cache
def service_model() -> ServiceModel:
    """The KMS service model, loaded from botocore's data once per process."""
    return get_session().get_service_model("kms")


@cache
def operation_names() -> frozenset[str]:
    """Every KMS operation name, e.g. ``"Encrypt"``."""
    return frozenset(service_model().operation_names)


@cache
def error_shape_names() -> frozenset[str]:
    """Every KMS error code the model declares, e.g. ``"NotFoundException"``."""
    return frozenset(shape.name for shape in service_model().error_shapes)


def parse_input(operation: str, body: Any) -> dict[str, Any]:
    """Check a decoded JSON request body against ``operation``'s input shape.

    Returns the members with blobs decoded to ``bytes`` and timestamps turned
    into aware UTC datetimes; everything else is returned as sent, minus
    nulls and members the model does not know. Members of
    ``KMSWEB_REQUIRED`` are required as the model's own. Raises
    :class:`ShapeError`.
    """
    op = _operation(operation)
    if not isinstance(body, dict):
        raise ShapeError(SERIALIZATION_EXCEPTION, _unexpected(body, "structure"))
    if op.input_shape is None:
        return {}
    errors: list[str] = []
    result = _parse_structure(op.input_shape, body, "", errors, KMSWEB_REQUIRED.get(operation, frozenset()))
    if errors:
        noun = "error" if len(errors) == 1 else "errors"
        raise ShapeError(
            VALIDATION_EXCEPTION,
            f"{len(errors)} validation {noun} detected: " + "; ".join(errors),
        )
    return result


def serialize_output(operation: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a service result into the JSON-ready body of ``operation``'s reply.

    Walks the output shape: ``bytes`` become base64 text, datetimes become
    epoch seconds (naive ones are taken as UTC), enum members their value;
    ``None`` members are dropped, and so are keys the shape does not declare,
    so internal fields cannot leak onto the wire.
    """
    op = _operation(operation)
    if op.output_shape is None:
        return {}
    return _serialize_structure(op.output_shape, result)


_encode_json = json.JSONEncoder(separators=(",", ":")).encode


def json_bytes(value: Any) -> bytes:
    """``value`` as compact JSON, ASCII only (non-ASCII is escaped), as bytes."""
    return _encode_json(value).encode("ascii")


def encode_output(operation: str, result: Mapping[str, Any]) -> bytes:
    """:func:`serialize_output`, encoded as the JSON body of the reply.

    The body's blobs (a 4 KiB ciphertext is 5.5 KB of base64) are written
    into the JSON text as they come out of the base64 encoder: the base64
    alphabet has nothing JSON must escape, so running them through the JSON
    encoder, which checks every character, is work for nothing. Only
    top-level blob members are taken out this way; member names are the
    model's own plain identifiers.
    """
    op = _operation(operation)
    if op.output_shape is None:
        return b"{}"
    rest: dict[str, Any] = {}
    blobs: list[bytes] = []
    for name, member in op.output_shape.members.items():
        item = result.get(name)
        if item is None:
            continue
        wire_name = member.serialization.get("name", name)
        if member.type_name == "blob":
            blobs.append(b'"' + wire_name.encode("ascii") + b'":"' + base64.b64encode(bytes(item)) + b'"')
        else:
            rest[wire_name] = _serialize_value(member, item)
    text = json_bytes(rest)
    if not blobs:
        return text
    return b"{" + b",".join(blobs) + (b"," + text[1:] if rest else b"}")


def _operation(name: str) -> OperationModel:
    if name not in operation_names():
        raise ShapeError(UNKNOWN_OPERATION_EXCEPTION, f"Unknown operation: {name}")
    return service_model().operation_model(name)


# --- input ---------------------------------------------------------------


def _parse_structure(
    shape: Any, value: dict[str, Any], path: str, errors: list[str], also_required: frozenset[str] = frozenset()
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    required = shape.required_members
    for name, member in shape.members.items():
        wire = member.serialization.get("name", name)
        item = value.get(wire)
        member_path = f"{path}.{_camel(name)}" if path else _camel(name)
        if item is None:
            if name in required or name in also_required:
                errors.append(f"Value null at '{member_path}' failed to satisfy constraint: Member must not be null")
            continue
        if member.type_name == "map" and member.name == _CONTEXT_SHAPE and not path:
            out[name] = _parse_map(member, item, member_path, errors, nul_ok=True)
            continue
        out[name] = _parse_value(member, item, member_path, errors)
    return out


def _parse_value(shape: Any, value: Any, path: str, errors: list[str]) -> Any:
    """Deserialize one value (raising on type errors) and collect violations."""
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            raise ShapeError(SERIALIZATION_EXCEPTION, _unexpected(value, kind))
        return _parse_structure(shape, value, path, errors)
    if kind == "list":
        if not isinstance(value, list):
            raise ShapeError(SERIALIZATION_EXCEPTION, _unexpected(value, kind))
        member = shape.member
        items = []
        for index, item in enumerate(value, start=1):
            item_path = f"{path}.{index}.member"
            if item is None:
                errors.append(f"Value null at '{item_path}' failed to satisfy constraint: Member must not be null")
                continue
            items.append(_parse_value(member, item, item_path, errors))
        _check_constraints(shape, value, len(value), path, errors)
        return items
    if kind == "map":
        return _parse_map(shape, value, path, errors)
    parsed = _parse_scalar(shape, value)
    size = len(parsed) if isinstance(parsed, (str, bytes)) else None
    _check_constraints(shape, parsed, size, path, errors)
    return parsed


def _parse_map(shape: Any, value: Any, path: str, errors: list[str], *, nul_ok: bool = False) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ShapeError(SERIALIZATION_EXCEPTION, _unexpected(value, "map"))
    key_shape, value_shape = shape.key, shape.value
    out: dict[str, Any] = {}
    key_problems: list[str] = []
    value_problems: list[str] = []
    for key, item in value.items():
        _check_constraints(key_shape, key, len(key), None, key_problems, nul_ok=nul_ok)
        if item is None:
            value_problems.append("Member must not be null")
            continue
        if value_shape.type_name in ("structure", "list", "map"):
            out[key] = _parse_value(value_shape, item, f"{path}.{key}", errors)
            continue
        parsed = _parse_scalar(value_shape, item)
        size = len(parsed) if isinstance(parsed, (str, bytes)) else None
        _check_constraints(value_shape, parsed, size, None, value_problems, nul_ok=nul_ok)
        out[key] = parsed
    _check_constraints(shape, value, len(value), path, errors)
    shown = _shown(shape, value)
    for label, problems in (("Map keys", key_problems), ("Map value", value_problems)):
        if problems:
            unique = ", ".join(dict.fromkeys(problems))
            errors.append(
                f"{shown} at '{path}' failed to satisfy constraint: {label} must satisfy constraint: [{unique}]"
            )
    return out


def _parse_scalar(shape: Shape, value: Any) -> Any:
    """Turn a JSON scalar into the shape's Python type, or raise."""
    kind = shape.type_name
    if isinstance(value, (dict, list)):
        raise ShapeError(SERIALIZATION_EXCEPTION, _unexpected(value, kind))
    if kind == "string":
        if isinstance(value, str):
            return value
    elif kind in _INT_BOUNDS:
        # 5.0 is the integer 5 in JSON; bool is an int in Python but never a
        # number on the wire.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            low, high = _INT_BOUNDS[kind]
            if low <= value <= high:
                return value
            raise ShapeError(
                SERIALIZATION_EXCEPTION,
                f"NUMBER_VALUE {value} can not be converted to {_JAVA_TYPE[kind]}",
            )
    elif kind in ("float", "double"):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind == "boolean":
        if isinstance(value, bool):
            return value
    elif kind == "blob":
        if isinstance(value, str):
            try:
                # Strict: refuse stray characters (instead of skipping
                # them), bad padding and data after it, so what we decrypt is
                # exactly what was sent. (In C, unlike b64decode's validate=True.)
                return binascii.a2b_base64(value, strict_mode=True)
            except (binascii.Error, ValueError):
                raise ShapeError(SERIALIZATION_EXCEPTION, "Base64 value could not be decoded") from None
    elif (
        # The JSON protocol sends timestamps as epoch seconds.
        kind == "timestamp" and isinstance(value, (int, float)) and not isinstance(value, bool)
    ):
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            pass
    raise ShapeError(SERIALIZATION_EXCEPTION, _unconvertible(value, kind))


def _check_constraints(
    shape: Shape, value: Any, size: int | None, path: str | None, errors: list[str], *, nul_ok: bool = False
) -> None:
    """Append one message per broken constraint of ``shape``.

    With ``path`` the messages are full AWS errors; without, they are the bare
    reasons that a map folds into its own error. A string holding U+0000 is
    refused unless ``nul_ok``: PostgreSQL's text cannot hold it.
    """
    meta = shape.metadata
    reasons: list[str] = []
    enum_values = meta.get("enum")
    if enum_values and value not in enum_values:
        reasons.append(f"Member must satisfy enum value set: [{', '.join(enum_values)}]")
    low, high = meta.get("min"), meta.get("max")
    if size is not None:
        if low is not None and size < low:
            reasons.append(f"Member must have length greater than or equal to {low}")
        if high is not None and size > high:
            reasons.append(f"Member must have length less than or equal to {high}")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if low is not None and value < low:
            reasons.append(f"Member must have value greater than or equal to {low}")
        if high is not None and value > high:
            reasons.append(f"Member must have value less than or equal to {high}")
    pattern = meta.get("pattern")
    if pattern and isinstance(value, str):
        compiled = _compile(pattern)
        if compiled is not None and compiled.fullmatch(value) is None:
            reasons.append(f"Member must satisfy regular expression pattern: {pattern}")
    if not nul_ok and isinstance(value, str) and "\x00" in value:
        reasons.append(_NUL_REASON)
    if path is None:
        errors.extend(reasons)
        return
    if reasons:
        shown = _shown(shape, value)
        errors.extend(f"{shown} at '{path}' failed to satisfy constraint: {why}" for why in reasons)


@cache
def _compile(pattern: str) -> re.Pattern[str] | None:
    """Compile a model pattern once; ``None`` if Python cannot read it.

    The model's patterns are Java regexes: ASCII character classes, and
    matched against the whole value (AWS rejects ``'89hls;;f;d'`` against
    ``[a-zA-Z0-9_.-]+``).
    """
    try:
        return re.compile(pattern, re.ASCII)
    except re.error:
        return None


def _shown(shape: Shape, value: Any) -> str:
    """``Value '<v>'`` as AWS prints it, or ``Value`` for secrets and blobs."""
    if shape.metadata.get("sensitive") or shape.type_name == "blob":
        return "Value"
    return f"Value '{_java_str(value)}'"


def _java_str(value: Any) -> str:
    """Render a JSON value the way Java's toString does in AWS messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_java_str(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_java_str(v)}" for k, v in value.items()) + "}"
    if value is None:
        return "null"
    return str(value)


def _camel(name: str) -> str:
    """Lower the first letter only, as AWS does: ``AWSAccountId`` -> ``aWSAccountId``."""
    return name[:1].lower() + name[1:]


def _unexpected(value: Any, kind: str) -> str:
    """The message for a JSON value of the wrong kind where ``kind`` belongs."""
    if isinstance(value, dict):
        return "Start of structure or map found where not expected."
    if isinstance(value, list):
        return "Start of list found where not expected"
    return _unconvertible(value, kind)


def _unconvertible(value: Any, kind: str) -> str:
    target = _JAVA_TYPE.get(kind, "the member type")
    return f"{_token(value)} can not be converted to {target}"


def _token(value: Any) -> str:
    """The JSON token name AWS puts in its serialization messages."""
    if isinstance(value, bool):
        return "TRUE_VALUE" if value else "FALSE_VALUE"
    if isinstance(value, str):
        return "STRING_VALUE"
    if isinstance(value, (int, float)):
        return "NUMBER_VALUE"
    return "NULL_VALUE"


# --- output --------------------------------------------------------------


def _serialize_structure(shape: Any, value: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, member in shape.members.items():
        item = value.get(name)
        if item is None:
            continue
        out[member.serialization.get("name", name)] = _serialize_value(member, item)
    return out


def _serialize_value(shape: Any, value: Any) -> Any:
    kind = shape.type_name
    if kind == "structure":
        return _serialize_structure(shape, value)
    if kind == "list":
        return [_serialize_value(shape.member, item) for item in value if item is not None]
    if kind == "map":
        return {str(key): _serialize_value(shape.value, item) for key, item in value.items() if item is not None}
    if kind == "blob":
        return base64.b64encode(bytes(value)).decode("ascii")
    if kind == "timestamp":
        if isinstance(value, datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
            return value.timestamp()
        return value
    if isinstance(value, enum.Enum):
        return value.value
    return value
