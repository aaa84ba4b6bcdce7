"""Wildcard patterns and policy variables, compiled once at parse time.

A policy string that may hold policy variables (``${aws:username}``) is parsed
into a ``Template``: a tuple of parts that are pattern text (where ``*`` and
``?`` are wildcards), literal text (``${*}``, ``${?}``, ``${$}`` and resolved
variable values, where they are not), or variables. Templates without
variables are resolved once; the ones with variables are resolved per request
and their compiled regexes are cached by resolved text, so a busy policy never
recompiles.

ARN patterns (``Resource``, ``Arn*`` operators) match segment by segment, as
AWS describes: a wildcard in one of the five colon-separated segments before
the resource part does not cross a colon. The last segment a pattern has may
swallow the rest of the ARN, so ``arn:aws:kms:*`` and ``*`` match every key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

# A resolved piece of a template: its text, and whether that text is literal
# (True) or a pattern in which ``*`` and ``?`` are wildcards (False).
Chunk = tuple[str, bool]

_VARIABLE = re.compile(r"\$\{([^}]*)\}")
# ``key`` or ``key, 'default'`` (AWS's default-value syntax).
_VARIABLE_BODY = re.compile(r"^\s*([^\s,'}][^,'}]*?)\s*(?:,\s*'([^']*)')?\s*$")
_LITERAL_VARIABLES = frozenset({"*", "?", "$"})
_ARN_SEGMENTS = 6


@dataclass(frozen=True, slots=True)
class Var:
    """A policy variable: a context key (lower-cased) and an optional default."""

    key: str
    default: str | None


# Parts of a template: ("text", s) pattern text, ("lit", s) literal text, or a Var.
Part = tuple[str, str] | Var


def context_value_text(value: Any) -> str | None:
    """A single context value as the string AWS compares, or None if it has none.

    Lists have no single string form: multivalued keys cannot be policy
    variables, and string operators compare their members one by one.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return None


@dataclass(frozen=True, slots=True)
class Template:
    """A policy string, split into pattern text, literal text and variables."""

    source: str
    parts: tuple[Part, ...]
    has_vars: bool

    def resolve(self, keys: Mapping[str, Any]) -> tuple[Chunk, ...] | None:
        """The chunks with variables replaced from ``keys`` (lower-cased names).

        None when a variable has no value and no default: AWS then treats the
        value as null, which matches nothing.
        """
        out: list[Chunk] = []
        for part in self.parts:
            if isinstance(part, Var):
                text = context_value_text(keys.get(part.key))
                if text is None:
                    if part.default is None:
                        return None
                    text = part.default
                out.append((text, True))
            else:
                out.append((part[1], part[0] == "lit"))
        return tuple(out)

    @property
    def static_chunks(self) -> tuple[Chunk, ...]:
        """The chunks of a template without variables (no request needed)."""
        return tuple((p[1], p[0] == "lit") for p in self.parts if not isinstance(p, Var))


def parse_template(source: str, *, variables: bool) -> Template:
    """Split ``source`` into parts; ``variables`` is False for 2008-10-17 policies.

    In a 2008-10-17 policy ``${...}`` is plain text, as AWS documents.
    Malformed variable bodies stay plain text too.
    """
    if not variables or "${" not in source:
        return Template(source, (("text", source),), False)
    parts: list[Part] = []
    pos = 0
    has_vars = False
    for m in _VARIABLE.finditer(source):
        if m.start() > pos:
            parts.append(("text", source[pos : m.start()]))
        body = m.group(1)
        if body in _LITERAL_VARIABLES:
            parts.append(("lit", body))
        elif (vm := _VARIABLE_BODY.match(body)) is not None:
            parts.append(Var(vm.group(1).lower(), vm.group(2)))
            has_vars = True
        else:
            parts.append(("text", m.group(0)))
        pos = m.end()
    if pos < len(source):
        parts.append(("text", source[pos:]))
    return Template(source, tuple(parts), has_vars)


def chunks_text(chunks: tuple[Chunk, ...]) -> str:
    """The text a template resolved to (wildcards are plain characters here)."""
    return "".join(text for text, _ in chunks)


def _chunks_regex(chunks: tuple[Chunk, ...], *, arn: bool) -> str:
    """Regex source for the resolved chunks; see the module docstring for ARNs."""
    out: list[str] = []
    if not arn:
        for text, literal in chunks:
            if literal:
                out.append(re.escape(text))
            else:
                for ch in text:
                    out.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
        return "".join(out)
    # The last segment the pattern has swallows the rest of the ARN.
    last = min(sum(text.count(":") for text, _ in chunks), _ARN_SEGMENTS - 1)
    segment = 0
    for text, literal in chunks:
        for ch in text:
            if ch == ":":
                segment += 1
                out.append(":")
            elif not literal and ch == "*":
                out.append(".*" if segment >= last else "[^:]*")
            elif not literal and ch == "?":
                out.append("." if segment >= last else "[^:]")
            else:
                out.append(re.escape(ch))
    return "".join(out)


@lru_cache(maxsize=4096)
def compile_chunks(chunks: tuple[Chunk, ...], arn: bool) -> re.Pattern[str]:
    """Compile one resolved pattern (cached: variable patterns repeat per user)."""
    return re.compile(_chunks_regex(chunks, arn=arn), re.DOTALL)


def compile_alternatives(alternatives: list[tuple[Chunk, ...]], *, arn: bool) -> re.Pattern[str] | None:
    """One regex matching any of several static patterns (one C-level match call)."""
    if not alternatives:
        return None
    source = "|".join(f"(?:{_chunks_regex(c, arn=arn)})" for c in alternatives)
    return re.compile(source, re.DOTALL)


def has_wildcard(chunks: tuple[Chunk, ...]) -> bool:
    """Whether a resolved pattern needs a regex at all."""
    return any(not literal and ("*" in text or "?" in text) for text, literal in chunks)


def action_regex(patterns: list[str]) -> re.Pattern[str] | None:
    """One case-insensitive regex for wildcard action patterns (lower-cased input).

    Action wildcards span everything, colons included (``*`` is every action).
    """
    if not patterns:
        return None
    source = "|".join(
        "(?:" + "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in p.lower()) + ")"
        for p in patterns
    )
    return re.compile(source, re.DOTALL)
