"""Policy documents: validation, and compilation into immutable, fast statements.

``parse_policy`` is cached by document text, so a service may call it on every
request with the stored policy text and pay for parsing once per distinct
document.

Principal conventions (kmsweb's principals are ``arn:aws:iam::<acct>:user/…``,
``…:role/…`` and ``…:service/<name>``):

- ``"*"`` and ``{"AWS": "*"}`` match every principal;
- ``{"AWS": "arn:aws:iam::<acct>:root"}`` and ``{"AWS": "<acct>"}`` name the
  account: in an Allow they delegate to the account's identity-based
  policies, in a Deny they match every principal of the account;
- ``{"AWS": "<principal ARN>"}`` matches that principal exactly (AWS allows no
  partial wildcards in principals);
- ``{"Service": "<name>"}`` or ``{"Service": "<name>.amazonaws.com"}`` matches
  the service principal ``arn:aws:iam::<acct>:service/<name>``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from policies.evaluation.conditions import Condition, compile_condition_block
from policies.evaluation.errors import PolicyError
from policies.evaluation.patterns import (
    Template,
    action_regex,
    chunks_text,
    compile_alternatives,
    compile_chunks,
    has_wildcard,
    parse_template,
)

if TYPE_CHECKING:
    from policies.evaluation.engine import RequestContext

PolicyKind = Literal["key", "identity", "trust"]

MAX_POLICY_BYTES = 32768  # AWS: "cannot exceed 32 KB (32,768 bytes)"
VERSIONS = ("2012-10-17", "2008-10-17")
_TOP_ELEMENTS = frozenset({"Version", "Id", "Statement"})
_STATEMENT_ELEMENTS = frozenset(
    {"Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction", "Resource", "NotResource", "Condition"}
)
_ACTION = re.compile(r"^(\*|[A-Za-z0-9-]+:[A-Za-z0-9*?_-]+)$")
_ACCOUNT = re.compile(r"^\d{12}$")
_PRINCIPAL_ARN = re.compile(
    r"^arn:aws[a-z-]*:(?:iam::(\d{12}):(?:root|(?:user|role|service)/[^*?\s]+)"
    r"|sts::(\d{12}):(?:assumed-role|federated-user)/[^*?\s]+)$"
)
_SERVICE_SUFFIX = ".amazonaws.com"
_SERVICE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:service/(.+)$")
_ACTION_CACHE_LIMIT = 512

# Principal match levels, from weakest to strongest.
NO_MATCH, ACCOUNT, DIRECT = 0, 1, 2


def service_name(value: str) -> str:
    """The canonical name of a service principal: lower-cased, without ``.amazonaws.com``."""
    name = value.strip().lower()
    return name[: -len(_SERVICE_SUFFIX)] if name.endswith(_SERVICE_SUFFIX) else name


def service_of(principal_arn: str) -> str | None:
    """The service name if ``principal_arn`` is a kmsweb service principal."""
    m = _SERVICE_ARN.match(principal_arn)
    return service_name(m.group(1)) if m else None


@dataclass(frozen=True, slots=True)
class PrincipalSpec:
    """A compiled ``Principal`` / ``NotPrincipal`` element."""

    everyone: bool
    arns: frozenset[str]
    accounts: frozenset[str]
    services: frozenset[str]

    def level(self, ctx: RequestContext) -> int:
        """DIRECT when the principal is named (or ``*``), ACCOUNT when its account is."""
        if self.everyone or ctx.principal_arn in self.arns:
            return DIRECT
        if ctx.service is not None and ctx.service in self.services:
            return DIRECT
        if ctx.principal_account in self.accounts:
            # The account root user *is* the account.
            return DIRECT if ctx.is_root else ACCOUNT
        return NO_MATCH


@dataclass(frozen=True, slots=True, eq=False)
class Statement:
    """One compiled statement; ``index`` is its position in the document."""

    index: int
    sid: str | None
    deny: bool
    principal: PrincipalSpec | None
    not_principal: bool
    not_action: bool
    action_all: bool
    action_exact: frozenset[str]
    action_regex: re.Pattern[str] | None
    not_resource: bool
    resource_all: bool
    resource_exact: frozenset[str]
    resource_regex: re.Pattern[str] | None
    resource_templates: tuple[Template, ...]
    conditions: tuple[Condition, ...]

    @property
    def label(self) -> str:
        """How explanations name the statement: its Sid, else its position."""
        return f"'{self.sid}'" if self.sid else f"#{self.index + 1}"

    def matches_action(self, action: str) -> bool:
        """``action`` is lower-cased; action names are case-insensitive in AWS."""
        hit = (
            self.action_all
            or action in self.action_exact
            or (self.action_regex is not None and self.action_regex.fullmatch(action) is not None)
        )
        return hit is not self.not_action

    def principal_level(self, ctx: RequestContext) -> int:
        """How this (key policy) statement names the caller; see PrincipalSpec.level.

        A key policy statement without a Principal names nobody. NotPrincipal
        names everyone it does not list, at any level (account or exact).
        """
        if self.principal is None:
            return NO_MATCH
        level = self.principal.level(ctx)
        if self.not_principal:
            return NO_MATCH if level else DIRECT
        return level

    def matches_resource(self, resource: str, keys: Mapping[str, Any]) -> bool:
        hit = self.resource_all or resource in self.resource_exact
        if not hit and self.resource_regex is not None:
            hit = self.resource_regex.fullmatch(resource) is not None
        if not hit:
            for template in self.resource_templates:
                chunks = template.resolve(keys)
                # An unresolved variable makes that Resource entry match nothing.
                if chunks is not None and compile_chunks(chunks, True).fullmatch(resource) is not None:
                    hit = True
                    break
        return hit is not self.not_resource

    def conditions_hold(self, keys: Mapping[str, Any], memo: dict[Condition, bool] | None = None) -> bool:
        """All conditions hold; ``memo`` caches results per condition for one request."""
        for condition in self.conditions:
            if memo is None:
                if not condition.holds(keys):
                    return False
                continue
            result = memo.get(condition)
            if result is None:
                result = memo[condition] = condition.holds(keys)
            if not result:
                return False
        return True


@dataclass(frozen=True)
class Policy:
    """A parsed, validated and compiled policy document (immutable, cacheable)."""

    version: str
    id: str | None
    statements: tuple[Statement, ...] = field(compare=False)
    text: str
    kind: PolicyKind | None = None
    # action (lower-cased) -> statements whose Action/NotAction match it. A
    # cache, not state: filled on first use, bounded, safe to share.
    _by_action: dict[str, tuple[Statement, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def statements_for(self, action: str) -> tuple[Statement, ...]:
        """The statements whose Action element matches ``action`` (lower-cased)."""
        hit = self._by_action.get(action)
        if hit is None:
            hit = tuple(s for s in self.statements if s.matches_action(action))
            if len(self._by_action) < _ACTION_CACHE_LIMIT:
                self._by_action[action] = hit
        return hit


def parse_policy(document: str | Mapping[str, Any], *, kind: PolicyKind | None = None) -> Policy:
    """Validate and compile a policy; raise PolicyError with a precise message.

    ``kind="key"`` requires a Principal (or NotPrincipal) in every statement,
    as key policies do; ``kind="identity"`` forbids one, as identity-based
    policies do; ``kind="trust"`` (a role's trust policy) requires a
    Principal and forbids Resource, as IAM does: the role is the resource;
    ``None`` accepts both. A mapping is serialized to compact
    JSON first, and the 32 KiB limit applies to that text.
    """
    if isinstance(document, str):
        text = document
    elif isinstance(document, Mapping):
        text = json.dumps(document, separators=(",", ":"), ensure_ascii=False, default=_jsonable)
    else:
        raise PolicyError("The policy document must be a JSON object.")
    return _parse_text(text, kind)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise PolicyError(f"The policy document contains a value that is not JSON: {value!r}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Python's json would silently keep the last duplicate; a policy whose
    # meaning depends on which duplicate wins must be refused instead.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise PolicyError(f"The policy document contains the element {key} more than once in the same object.")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise PolicyError(f"The policy document contains {name}, which is not valid JSON.")


# 512 distinct documents per process: the hot set of key and identity
# policies, while bounding memory (each document is at most 32 KiB of text).
@lru_cache(maxsize=512)
def _parse_text(text: str, kind: PolicyKind | None) -> Policy:
    size = len(text.encode("utf-8"))
    if size > MAX_POLICY_BYTES:
        raise PolicyError(f"The policy document is {size} bytes; the limit is {MAX_POLICY_BYTES} bytes (32 KiB).")
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise PolicyError(
            f"The policy document is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
        ) from None
    except RecursionError:
        # No policy element nests more than a few levels; the decoder's
        # recursion limit is reached by nothing but hostile text.
        raise PolicyError("The policy document is nested too deeply.") from None
    if not isinstance(doc, dict):
        raise PolicyError("The policy document must be a JSON object.")
    for name in doc:
        if name not in _TOP_ELEMENTS:
            raise PolicyError(f"The policy document contains an unknown element: {name}.")
    # AWS: a document without Version is read as 2008-10-17 (no variables).
    version = doc.get("Version", "2008-10-17")
    if version not in VERSIONS:
        raise PolicyError(f"The policy document has an invalid Version: {version} (use 2012-10-17).")
    policy_id = doc.get("Id")
    if policy_id is not None and not isinstance(policy_id, str):
        raise PolicyError("The policy document's Id must be a string.")
    if "Statement" not in doc:
        raise PolicyError("The policy document has no Statement element.")
    raw = doc["Statement"]
    raw_statements = [raw] if isinstance(raw, dict) else raw
    if not isinstance(raw_statements, list):
        raise PolicyError("The Statement element must be an object or a list of objects.")
    if not raw_statements:
        raise PolicyError("The policy document contains no statements.")
    variables = version == "2012-10-17"
    statements: list[Statement] = []
    sids: set[str] = set()
    intern: dict[tuple[str, str, tuple[str, ...]], Condition] = {}
    for index, st in enumerate(raw_statements):
        compiled = _compile_statement(index, st, kind=kind, variables=variables, intern=intern)
        if compiled.sid is not None:
            if compiled.sid in sids:
                raise PolicyError(f"Statement IDs (Sid) must be unique within a policy; {compiled.sid} is repeated.")
            sids.add(compiled.sid)
        statements.append(compiled)
    return Policy(version=version, id=policy_id, statements=tuple(statements), text=text, kind=kind)


def _string_list(value: Any, element: str, where: str) -> list[str]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, str) and v for v in values):
        raise PolicyError(
            f"Policy contains a statement ({where}) whose {element} is not a string or a list of strings."
        )
    return values


def _compile_statement(
    index: int,
    st: Any,
    *,
    kind: PolicyKind | None,
    variables: bool,
    intern: dict[tuple[str, str, tuple[str, ...]], Condition],
) -> Statement:
    where = f"#{index + 1}"
    if not isinstance(st, dict):
        raise PolicyError(f"Policy contains a statement ({where}) that is not a JSON object.")
    sid = st.get("Sid")
    if sid is not None:
        if not isinstance(sid, str):
            raise PolicyError(f"Policy contains a statement ({where}) whose Sid is not a string.")
        where = f"Sid {sid}"
    for name in st:
        if name not in _STATEMENT_ELEMENTS:
            raise PolicyError(f"Policy contains a statement ({where}) with an unknown element: {name}.")

    effect = st.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise PolicyError(f"Policy contains a statement ({where}) whose Effect is not Allow or Deny: {effect}.")

    has_p, has_np = "Principal" in st, "NotPrincipal" in st
    if has_p and has_np:
        raise PolicyError(f"Policy contains a statement ({where}) with both Principal and NotPrincipal.")
    if kind in ("key", "trust") and not (has_p or has_np):
        raise PolicyError(f"Policy contains a statement ({where}) with no Principal.")
    if kind == "identity" and (has_p or has_np):
        raise PolicyError(f"An identity-based policy must not specify a principal (statement {where}).")
    principal = _compile_principal(st["Principal" if has_p else "NotPrincipal"], where) if has_p or has_np else None

    has_a, has_na = "Action" in st, "NotAction" in st
    if has_a == has_na:
        raise PolicyError(f"Policy contains a statement ({where}) that must have exactly one of Action or NotAction.")
    actions = _string_list(st["Action" if has_a else "NotAction"], "Action", where)
    for a in actions:
        if not _ACTION.match(a):
            raise PolicyError(
                f"Policy contains a statement ({where}) with an invalid action: {a} (use service:action)."
            )
    lowered = [a.lower() for a in actions]
    wild = [a for a in lowered if "*" in a or "?" in a]

    has_r, has_nr = "Resource" in st, "NotResource" in st
    if kind == "trust":
        if has_r or has_nr:
            raise PolicyError(f"A trust policy must not specify a Resource (statement {where}).")
        st = {**st, "Resource": "*"}
        has_r = True
    if has_r == has_nr:
        raise PolicyError(
            f"Policy contains a statement ({where}) that must have exactly one of Resource or NotResource."
        )
    resources = _string_list(st["Resource" if has_r else "NotResource"], "Resource", where)
    for r in resources:
        if r != "*" and not r.startswith("arn:"):
            raise PolicyError(f"Policy contains a statement ({where}) with an invalid resource: {r} (use * or an ARN).")
    templates = [parse_template(r, variables=variables) for r in resources]
    static = [t.static_chunks for t in templates if not t.has_vars]

    conditions = (
        compile_condition_block(st["Condition"], variables=variables, intern=intern) if "Condition" in st else ()
    )

    return Statement(
        index=index,
        sid=sid,
        deny=effect == "Deny",
        principal=principal,
        not_principal=has_np,
        not_action=has_na,
        action_all="*" in lowered,
        action_exact=frozenset(a for a in lowered if a not in wild),
        action_regex=action_regex(wild),
        not_resource=has_nr,
        resource_all=any(t.source == "*" for t in templates),
        resource_exact=frozenset(chunks_text(c) for c in static if not has_wildcard(c)),
        resource_regex=compile_alternatives([c for c in static if has_wildcard(c)], arn=True),
        resource_templates=tuple(t for t in templates if t.has_vars),
        conditions=conditions,
    )


def _compile_principal(raw: Any, where: str) -> PrincipalSpec:
    invalid = f"Policy contains a statement ({where}) with one or more invalid principals"
    if raw == "*":
        return PrincipalSpec(True, frozenset(), frozenset(), frozenset())
    if not isinstance(raw, dict) or not raw:
        raise PolicyError(f'{invalid}: use "*" or an object with AWS or Service.')
    everyone = False
    arns: set[str] = set()
    accounts: set[str] = set()
    services: set[str] = set()
    for ptype, value in raw.items():
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, str) and v for v in values):
            raise PolicyError(f"{invalid}: {ptype} must be a string or a list of strings.")
        if ptype == "AWS":
            for v in values:
                if v == "*":
                    everyone = True
                elif _ACCOUNT.match(v):
                    accounts.add(v)
                elif (m := _PRINCIPAL_ARN.match(v)) is not None:
                    if v.endswith(":root") and m.group(1):
                        accounts.add(m.group(1))
                    else:
                        arns.add(v)
                else:
                    raise PolicyError(f"{invalid}: {v}.")
        elif ptype == "Service":
            for v in values:
                if "*" in v or "?" in v or not service_name(v):
                    raise PolicyError(f"{invalid}: {v} (service principals take no wildcards).")
                services.add(service_name(v))
        else:
            raise PolicyError(f"{invalid}: principal type {ptype} is not supported (use AWS or Service).")
    return PrincipalSpec(everyone, frozenset(arns), frozenset(accounts), frozenset(services))
