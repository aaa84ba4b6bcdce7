"""Condition operators: parsed and compiled at parse time, evaluated per request.

Semantics follow the IAM reference ("Condition operators", "Conditions with
multiple context keys or values", "Single-valued vs. multivalued context
keys"):

- several operators, or several keys under one operator, are AND'd; several
  values for one key are OR'd, and NOR'd for negated operators;
- a key missing from the request makes an operator false, a negated operator
  (``StringNotEquals``, ``ArnNotLike``, ``NotIpAddress``, …) true, any
  ``…IfExists`` operator true, ``ForAllValues:`` true and ``ForAnyValue:``
  false; ``Null`` tests presence (``"true"``: the key is absent);
- ``ForAllValues:`` holds when every request value matches a policy value,
  ``ForAnyValue:`` when at least one does (with a negated operator: does not
  match any policy value). A list value under a plain operator behaves like
  ``ForAnyValue:`` (positive operators) or like ``ForAllValues:`` (negated
  ones: no request value may match);
- a request value of the wrong type (``"abc"`` under ``NumericEquals``) matches
  no policy value, so it fails positive operators and passes negated ones.

Policy variables are honoured in the String, Arn and Bool families only, as
the IAM reference lists.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from policies.evaluation.errors import PolicyError
from policies.evaluation.patterns import (
    Template,
    chunks_text,
    compile_alternatives,
    compile_chunks,
    context_value_text,
    has_wildcard,
    parse_template,
)
from policies.evaluation.values import as_bool, as_epoch, as_ip, as_number, ip_text

Qualifier = Literal["", "any", "all"]
_MULTI = (list, tuple, set, frozenset)
_SCALARS = frozenset({str, bool, int, float})
_MISSING: Any = object()

# Lower-cased operator name -> (canonical name, family, mode, negated).
_OPERATORS: dict[str, tuple[str, str, str, bool]] = {
    op.lower(): (op, family, mode, negated)
    for op, family, mode, negated in (
        ("StringEquals", "string", "eq", False),
        ("StringNotEquals", "string", "eq", True),
        ("StringEqualsIgnoreCase", "string", "eqi", False),
        ("StringNotEqualsIgnoreCase", "string", "eqi", True),
        ("StringLike", "string", "like", False),
        ("StringNotLike", "string", "like", True),
        ("NumericEquals", "numeric", "eq", False),
        ("NumericNotEquals", "numeric", "eq", True),
        ("NumericLessThan", "numeric", "lt", False),
        ("NumericLessThanEquals", "numeric", "le", False),
        ("NumericGreaterThan", "numeric", "gt", False),
        ("NumericGreaterThanEquals", "numeric", "ge", False),
        ("DateEquals", "date", "eq", False),
        ("DateNotEquals", "date", "eq", True),
        ("DateLessThan", "date", "lt", False),
        ("DateLessThanEquals", "date", "le", False),
        ("DateGreaterThan", "date", "gt", False),
        ("DateGreaterThanEquals", "date", "ge", False),
        ("Bool", "bool", "eq", False),
        ("BinaryEquals", "binary", "eq", False),
        ("IpAddress", "ip", "in", False),
        ("NotIpAddress", "ip", "in", True),
        ("ArnEquals", "arn", "like", False),
        ("ArnLike", "arn", "like", False),
        ("ArnNotEquals", "arn", "like", True),
        ("ArnNotLike", "arn", "like", True),
        ("Null", "null", "null", False),
    )
}
_VARIABLE_FAMILIES = frozenset({"string", "arn", "bool"})

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "eq": lambda a, b: a == b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
}


@dataclass(frozen=True, slots=True)
class OperatorSpec:
    """A parsed operator name such as ``ForAnyValue:StringLikeIfExists``."""

    name: str
    family: str
    mode: str
    negated: bool
    qualifier: Qualifier
    if_exists: bool


def parse_operator(raw: str) -> OperatorSpec:
    """Parse an operator name (case-insensitive); unknown names raise PolicyError."""
    rest = raw
    qualifier: Qualifier = ""
    low = raw.lower()
    if low.startswith("foranyvalue:"):
        qualifier, rest = "any", raw[len("ForAnyValue:") :]
    elif low.startswith("forallvalues:"):
        qualifier, rest = "all", raw[len("ForAllValues:") :]
    base = rest.lower()
    if_exists = base.endswith("ifexists")
    if if_exists:
        base = base[: -len("ifexists")]
    entry = _OPERATORS.get(base)
    # Null is a presence test already; AWS has no NullIfExists.
    if entry is None or (if_exists and entry[1] == "null"):
        raise PolicyError(f"Policy contains a statement with an unknown condition operator: {raw}")
    name, family, mode, negated = entry
    prefix = {"": "", "any": "ForAnyValue:", "all": "ForAllValues:"}[qualifier]
    return OperatorSpec(prefix + name + ("IfExists" if if_exists else ""), family, mode, negated, qualifier, if_exists)


# --- compiled matchers: "does this request value match any policy value?" -------


class Matcher(Protocol):
    def match(self, value: Any, keys: Mapping[str, Any]) -> bool: ...


class _StringMatcher:
    """StringEquals / EqualsIgnoreCase / Like and the Arn operators."""

    __slots__ = ("mode", "arn", "exact", "regex", "templates")

    def __init__(self, mode: str, arn: bool, values: list[Template]) -> None:
        self.mode = mode
        self.arn = arn
        static = [t for t in values if not t.has_vars]
        self.templates = tuple(t for t in values if t.has_vars)
        self.exact: frozenset[str] = frozenset()
        self.regex = None
        if mode in ("eq", "eqi"):
            texts = (chunks_text(t.static_chunks) for t in static)
            self.exact = frozenset(s.lower() for s in texts) if mode == "eqi" else frozenset(texts)
        else:
            # Wildcard-free patterns are compared as plain strings: cheaper.
            chunked = [t.static_chunks for t in static]
            self.exact = frozenset(chunks_text(c) for c in chunked if not has_wildcard(c))
            self.regex = compile_alternatives([c for c in chunked if has_wildcard(c)], arn=arn)

    def match(self, value: Any, keys: Mapping[str, Any]) -> bool:
        s = context_value_text(value)
        if s is None:
            return False
        probe = s.lower() if self.mode == "eqi" else s
        if probe in self.exact or (self.regex is not None and self.regex.fullmatch(s) is not None):
            return True
        for template in self.templates:
            chunks = template.resolve(keys)
            if chunks is None:
                continue  # an unresolved variable is null: it matches nothing
            if self.mode == "like":
                if compile_chunks(chunks, self.arn).fullmatch(s) is not None:
                    return True
            elif self.mode == "eqi":
                if chunks_text(chunks).lower() == probe:
                    return True
            elif chunks_text(chunks) == s:
                return True
        return False


class _NumericMatcher:
    __slots__ = ("compare", "values", "coerce")

    def __init__(self, mode: str, values: list[float], coerce: Callable[[Any], float | int | None]) -> None:
        self.compare = _COMPARE[mode]
        self.values = tuple(values)
        self.coerce = coerce

    def match(self, value: Any, keys: Mapping[str, Any]) -> bool:
        n = self.coerce(value)
        if n is None:
            return False
        compare = self.compare
        for v in self.values:
            if compare(n, v):
                return True
        return False


class _BoolMatcher:
    __slots__ = ("values", "templates")

    def __init__(self, values: frozenset[bool], templates: tuple[Template, ...]) -> None:
        self.values = values
        self.templates = templates

    def match(self, value: Any, keys: Mapping[str, Any]) -> bool:
        b = as_bool(value)
        if b is None:
            return False
        if b in self.values:
            return True
        for template in self.templates:
            chunks = template.resolve(keys)
            if chunks is not None and as_bool(chunks_text(chunks)) is b:
                return True
        return False


class _BinaryMatcher:
    __slots__ = ("values",)

    def __init__(self, values: frozenset[str]) -> None:
        self.values = values

    def match(self, value: Any, keys: Mapping[str, Any]) -> bool:
        return isinstance(value, str) and value in self.values


class _IpMatcher:
    """Networks as integer ranges: a membership test is two integer comparisons."""

    __slots__ = ("ranges",)

    def __init__(self, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> None:
        self.ranges = tuple((n.version, int(n.network_address), int(n.broadcast_address)) for n in networks)

    def match(self, value: Any, keys: Mapping[str, Any]) -> bool:
        addr = ip_text(value) if value.__class__ is str else as_ip(value)
        if addr is None:
            return False
        version, n = addr
        # An IPv4 address never matches an IPv6 range and vice versa. (A loop,
        # not any(): this is the hottest matcher and the tuples are tiny.)
        for v, lo, hi in self.ranges:
            if v == version and lo <= n <= hi:
                return True
        return False


class _NullMatcher:
    """Null compares presence, not values: ``Condition.holds`` uses ``expect_absent``."""

    __slots__ = ("expect_absent",)

    def __init__(self, expect_absent: frozenset[bool]) -> None:
        self.expect_absent = expect_absent

    def match(self, value: Any, keys: Mapping[str, Any]) -> bool:
        return False


@dataclass(frozen=True, slots=True, eq=False)
class Condition:
    """One (operator, key, values) triple of a statement's Condition block.

    Identity-hashed: a policy interns identical conditions into one object,
    and ``evaluate`` memoises each object's result for the request.
    """

    operator: str
    key: str  # lower-cased: condition key names are case-insensitive
    key_name: str  # as written, for explanations
    values: tuple[str, ...]
    negated: bool
    qualifier: Qualifier
    if_exists: bool
    matcher: Matcher
    # For Null: the accepted answers to "is the key absent?"; None otherwise.
    null_expect: frozenset[bool] | None = None

    def holds(self, keys: Mapping[str, Any]) -> bool:
        """Evaluate against the request's lower-cased context keys."""
        value = keys.get(self.key, _MISSING)
        # Fast path: most context values are plain scalars (this runs once per
        # condition per statement per request).
        if value.__class__ in _SCALARS:
            if self.null_expect is not None:
                return False in self.null_expect
            return self.matcher.match(value, keys) is not self.negated
        missing = value is _MISSING or value is None or (isinstance(value, _MULTI) and not value)
        if self.null_expect is not None:
            return missing in self.null_expect
        if missing:
            if self.if_exists or self.qualifier == "all":
                return True
            if self.qualifier == "any":
                return False
            return self.negated
        match = self.matcher.match
        negated = self.negated
        if isinstance(value, _MULTI):
            if self.qualifier == "all" or (negated and self.qualifier == ""):
                return all(match(v, keys) is not negated for v in value)
            return any(match(v, keys) is not negated for v in value)
        return match(value, keys) is not negated


def _scalar_text(value: Any) -> str:
    """A policy value as text: JSON numbers and booleans are accepted as AWS does."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def compile_condition_block(
    block: Any, *, variables: bool, intern: dict[tuple[str, str, tuple[str, ...]], Condition] | None = None
) -> tuple[Condition, ...]:
    """Validate and compile a statement's ``Condition`` element.

    ``intern`` (one per policy) makes identical conditions of different
    statements the same object, so a request evaluates each only once.
    """
    if not isinstance(block, Mapping):
        raise PolicyError("Policy contains a statement whose Condition is not a JSON object.")
    out: list[Condition] = []
    for raw_op, entries in block.items():
        spec = parse_operator(raw_op)
        if not isinstance(entries, Mapping) or not entries:
            raise PolicyError(
                f"Policy contains a statement with a condition operator {raw_op} that does not map "
                "condition keys to values."
            )
        for key, raw_values in entries.items():
            if not key.strip():
                raise PolicyError(f"Policy contains a statement with an empty condition key under {raw_op}.")
            values = raw_values if isinstance(raw_values, list) else [raw_values]
            if not values:
                raise PolicyError(f"Policy contains a statement with no values for condition key {key}.")
            for v in values:
                if v is None or isinstance(v, dict | list):
                    raise PolicyError(
                        f"Policy contains a statement with an invalid value for condition key {key}: "
                        "values must be strings, numbers or booleans."
                    )
            texts = [_scalar_text(v) for v in values]
            signature = (spec.name, key.lower(), tuple(texts))
            if intern is not None and (shared := intern.get(signature)) is not None:
                out.append(shared)
                continue
            matcher = _compile_matcher(spec, key, texts, variables=variables and spec.family in _VARIABLE_FAMILIES)
            condition = Condition(
                operator=spec.name,
                key=key.lower(),
                key_name=key,
                values=tuple(texts),
                negated=spec.negated,
                qualifier=spec.qualifier,
                if_exists=spec.if_exists,
                matcher=matcher,
                null_expect=matcher.expect_absent if isinstance(matcher, _NullMatcher) else None,
            )
            if intern is not None:
                intern[signature] = condition
            out.append(condition)
    return tuple(out)


def _compile_matcher(spec: OperatorSpec, key: str, texts: list[str], *, variables: bool) -> Matcher:
    family = spec.family

    def bad(what: str, value: str) -> PolicyError:
        return PolicyError(f"Policy contains a statement with an invalid {what} for {spec.name} on {key}: {value}")

    if family in ("string", "arn"):
        templates = [parse_template(t, variables=variables) for t in texts]
        return _StringMatcher(spec.mode, family == "arn", templates)
    if family == "numeric":
        numbers: list[float] = []
        for t in texts:
            n = as_number(t)
            if n is None:
                raise bad("number", t)
            numbers.append(n)
        return _NumericMatcher(spec.mode, numbers, as_number)
    if family == "date":
        dates: list[float] = []
        for t in texts:
            e = as_epoch(t)
            if e is None:
                raise bad("date (use ISO 8601 or epoch seconds)", t)
            dates.append(e)
        return _NumericMatcher(spec.mode, dates, as_epoch)
    if family == "bool":
        static: set[bool] = set()
        bool_templates: list[Template] = []
        for t in texts:
            template = parse_template(t, variables=variables)
            if template.has_vars:
                bool_templates.append(template)
                continue
            b = as_bool(t)
            if b is None:
                raise bad("boolean (use true or false)", t)
            static.add(b)
        return _BoolMatcher(frozenset(static), tuple(bool_templates))
    if family == "binary":
        return _BinaryMatcher(frozenset(texts))
    if family == "ip":
        networks = []
        for t in texts:
            try:
                networks.append(ipaddress.ip_network(t.strip(), strict=False))
            except ValueError:
                raise bad("IP address or CIDR block", t) from None
        return _IpMatcher(networks)
    # Null
    expect: set[bool] = set()
    for t in texts:
        b = as_bool(t)
        if b is None:
            raise bad("value (use true or false)", t)
        expect.add(b)
    return _NullMatcher(frozenset(expect))
