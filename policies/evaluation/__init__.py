"""The pure policy engine: AWS IAM/KMS policy documents, conditions, grants, decisions.

No Django, no ORM, no settings, no clock: callers pass everything in
(``RequestContext.now`` included), which keeps the engine fast and testable.

Modules: ``policy`` (parsing, validation, compilation; cached by text),
``conditions`` (operators), ``patterns`` (wildcards, policy variables),
``engine`` (the decision).
"""

from policies.evaluation.engine import (
    ENCRYPTION_CONTEXT_OPERATIONS,
    RETIRE_DENIAL_CLAUSE,
    Decision,
    GrantView,
    ProposedGrant,
    RequestContext,
    StatementRef,
    access_denied_message,
    evaluate,
    evaluate_retire,
    grant_may_create,
)
from policies.evaluation.errors import PolicyError
from policies.evaluation.policy import MAX_POLICY_BYTES, Policy, PolicyKind, Statement, parse_policy

__all__ = [
    "ENCRYPTION_CONTEXT_OPERATIONS",
    "MAX_POLICY_BYTES",
    "Decision",
    "GrantView",
    "ProposedGrant",
    "RETIRE_DENIAL_CLAUSE",
    "Policy",
    "PolicyError",
    "PolicyKind",
    "RequestContext",
    "Statement",
    "StatementRef",
    "access_denied_message",
    "evaluate",
    "evaluate_retire",
    "grant_may_create",
    "parse_policy",
]
