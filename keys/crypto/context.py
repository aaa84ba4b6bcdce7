"""Canonical bytes of an encryption context, bound as AES-GCM AAD.

The form is unambiguous (length-prefixed) and independent of the order the
client sent the pairs in, so ``{"a": "b"}`` always authenticates the same
way and ``{"ab": ""}`` can never collide with ``{"a": "b"}``.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping


def canonical_context(context: Mapping[str, str] | None) -> bytes:
    """Encode the context as count, then sorted (key, value) pairs.

    Pairs are sorted by the UTF-8 bytes of the key; each string is preceded by
    its byte length as an unsigned 32-bit big-endian integer.
    """
    if not context:
        return b""
    pairs = sorted((k.encode("utf-8"), v.encode("utf-8")) for k, v in context.items())
    out = [struct.pack(">I", len(pairs))]
    for k, v in pairs:
        out.append(struct.pack(">I", len(k)))
        out.append(k)
        out.append(struct.pack(">I", len(v)))
        out.append(v)
    return b"".join(out)
