"""Compliance rules as code: metadata plus a pure evaluation over a snapshot of facts.

Importing this package registers the built-in rules in ``RULES`` (by id, in
declaration order). Nothing here touches Django or the database.
"""

from compliance.rules import builtin as _builtin  # noqa: F401 (registers the rules)
from compliance.rules.base import FRAMEWORKS, RULES, Result, Rule
from compliance.rules.facts import (
    AccessKeyFact,
    GrantFact,
    KeyFact,
    PolicyFact,
    PrincipalFact,
    ResourceKind,
    Settings,
    Severity,
    Snapshot,
)

__all__ = [
    "FRAMEWORKS",
    "RULES",
    "AccessKeyFact",
    "GrantFact",
    "KeyFact",
    "PolicyFact",
    "PrincipalFact",
    "ResourceKind",
    "Result",
    "Rule",
    "Settings",
    "Severity",
    "Snapshot",
]
