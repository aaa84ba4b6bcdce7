"""What a rule is, what it returns, and the registry of built-in rules."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from compliance.rules.facts import ResourceKind, Severity, Snapshot

# The frameworks a rule can map to, in the order the dashboard shows them.
FRAMEWORKS = ("CIS", "Security Hub", "PCI DSS", "NIST SP 800-57", "AWS Config")


@dataclass(frozen=True)
class Result:
    """The verdict on one resource: compliant or not, and why (the evidence).

    ``resource_id`` is the resource's ARN (keys, principals), its grant id or
    access key id; ``key_id`` and ``principal_arn`` are what the findings
    table filters on. ``severity`` overrides the rule's for this finding.
    """

    resource_id: str
    account_id: str
    compliant: bool
    evidence: Mapping[str, Any] = field(default_factory=dict)
    key_id: str = ""
    principal_arn: str = ""
    severity: Severity | None = None


@dataclass(frozen=True)
class Rule:
    """A compliance rule: metadata and a pure evaluation over a snapshot.

    ``evaluate`` yields one ``Result`` per resource the rule applies to; a
    resource it does not yield is out of the rule's scope.
    """

    id: str
    title: str
    severity: Severity
    resource_kind: ResourceKind
    # (framework, control) pairs, e.g. ("Security Hub", "KMS.4").
    frameworks: tuple[tuple[str, str], ...]
    remediation: str
    evaluate: Callable[[Snapshot], Iterable[Result]]

    @property
    def framework_labels(self) -> list[str]:
        return [f"{name} {control}" for name, control in self.frameworks]


RULES: dict[str, Rule] = {}


def rule(
    *,
    id: str,  # noqa: A002 (the rule's id)
    title: str,
    severity: Severity,
    resource_kind: ResourceKind,
    frameworks: tuple[tuple[str, str], ...],
    remediation: str,
) -> Callable[[Callable[[Snapshot], Iterable[Result]]], Rule]:
    """Declare a built-in rule around its evaluation function."""

    def register(fn: Callable[[Snapshot], Iterable[Result]]) -> Rule:
        if id in RULES:
            raise ValueError(f"duplicate compliance rule id {id}")
        made = Rule(id, title, severity, resource_kind, frameworks, remediation, fn)
        RULES[id] = made
        return made

    return register
