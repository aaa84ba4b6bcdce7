"""Dashboard pages of the least-privilege review: a principal's access review, the
account's external access, and the change previews the policy forms ask for.

Views parse, build a Caller, call one service, and render. Previews are HTMX
fragments: a policy the engine refuses comes back as an inline error, and
nothing is ever saved by a preview (saving stays with the policy forms and
their services).
"""

from __future__ import annotations

import difflib
import json
from typing import Any

from django.http import HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from compliance.review import services
from keys.forms import PolicyForm
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import InvalidArn, MalformedPolicyDocument, NotFound, ValidationError
from policies.callers import caller_from_request
from policies.forms import PolicyDocumentForm
from policies.roles import role_allows
from policies.selectors import grant_request_get_for, principal_get_for

APPLY_NAME = "least-privilege"
_PREVIEW = "compliance/partials/policy_preview.html"


def _current_text(principal: Any) -> str:
    """The principal's inline and attached policies, one pretty-printed document after another."""
    parts = []
    for policy in principal.inline_policies.order_by("name"):
        parts.append(f"// inline policy {policy.name}\n{_pretty(policy.document)}")
    for attachment in principal.attachments.select_related("policy").order_by("policy__name"):
        parts.append(f"// managed policy {attachment.policy.name}\n{_pretty(attachment.policy.document)}")
    return "\n".join(parts)


def _pretty(document: str) -> str:
    try:
        return json.dumps(json.loads(document), indent=2)
    except ValueError:
        return document


@require_GET
def access_review(request: Any, principal_id: int) -> HttpResponse:
    """A principal's allowed against used access, its generated policy and the diff against its policies."""
    caller = caller_from_request(request)
    principal = principal_get_for(caller=caller, principal_id=principal_id)
    days_error = ""
    try:
        days = services.check_days(request.GET.get("days", services.DEFAULT_DAYS))
    except ValidationError as exc:
        days, days_error = services.DEFAULT_DAYS, exc.message
    review = services.access_review_for(caller=caller, principal_arn=principal.arn, days=days)
    current = _current_text(principal)
    diff = list(
        difflib.unified_diff(
            current.splitlines(), review.generated_text.splitlines(), "current", "generated", lineterm=""
        )
    )
    inline_names = list(principal.inline_policies.order_by("name").values_list("name", flat=True))
    context = {
        "principal": principal,
        "review": review,
        "days": days,
        "days_error": days_error,
        "diff": diff,
        "inline_names": inline_names,
        "apply_name": inline_names[0] if len(inline_names) == 1 else APPLY_NAME,
        "can_apply": role_allows(caller.roles, "iam:PutPrincipalPolicy"),
        "external": [k for k in review.keys if k.external],
        "nav": "compliance",
    }
    return render(request, "compliance/access_review.html", context)


@require_GET
def external_access(request: Any) -> HttpResponse:
    """Every principal of another account that can use one of the account's keys, and the path."""
    caller = caller_from_request(request)
    rows = services.external_access_for(caller=caller)
    return render(request, "compliance/external_access.html", {"rows": rows, "nav": "compliance"})


def _preview(request: Any, caller: Caller, proposal: services.Proposal, **extra: Any) -> HttpResponse:
    context: dict[str, Any] = {"error": "", **extra}
    try:
        context["preview"] = services.policy_preview(caller=caller, proposal=proposal)
    except (MalformedPolicyDocument, ValidationError, NotFound, InvalidArn) as exc:
        context["error"] = exc.message
    return render(request, _PREVIEW, context)


@require_POST
def key_policy_preview(request: Any, key_id: str) -> HttpResponse:
    """The key page's Preview step: what the policy in the form would change; nothing is saved."""
    caller = caller_from_request(request)
    form = PolicyForm(request.POST)
    if not form.is_valid():
        messages = [str(m) for m in form.errors.get("policy", ["Enter a key policy."])]
        return render(request, _PREVIEW, {"error": " ".join(messages)})
    proposal = services.Proposal("KeyPolicy", key_id=key_id, policy=form.cleaned_data["policy"])
    return _preview(request, caller, proposal)


@require_POST
def identity_policy_preview(request: Any, principal_id: int) -> HttpResponse:
    """The principal page's (and the access review's) Preview step for an inline policy.

    With ``apply`` set, the fragment ends with the form that saves the
    previewed document through the identity-policy service.
    """
    caller = caller_from_request(request)
    principal = principal_get_for(caller=caller, principal_id=principal_id)
    form = PolicyDocumentForm(request.POST)
    if not form.is_valid():
        errors = [f"{name}: {' '.join(str(m) for m in msgs)}" for name, msgs in form.errors.items()]
        return render(request, _PREVIEW, {"error": " ".join(errors)})
    name, document = form.cleaned_data["name"], form.cleaned_data["document"]
    proposal = services.Proposal("IdentityPolicy", policy_name=name, policy=document, principal_arn=principal.arn)
    extra: dict[str, Any] = {}
    if request.POST.get("apply") and role_allows(caller.roles, "iam:PutPrincipalPolicy"):
        extra = {
            "apply_url": reverse("policies:principal_policy_put", args=[principal.pk]),
            "apply_name": name,
            "apply_document": document,
        }
    return _preview(request, caller, proposal, **extra)


@require_POST
def managed_policy_preview(request: Any) -> HttpResponse:
    """The Principals page's Preview step for a managed policy: for every principal it is attached to."""
    caller = caller_from_request(request)
    form = PolicyDocumentForm(request.POST)
    if not form.is_valid():
        errors = [f"{name}: {' '.join(str(m) for m in msgs)}" for name, msgs in form.errors.items()]
        return render(request, _PREVIEW, {"error": " ".join(errors)})
    proposal = services.Proposal(
        "IdentityPolicy", policy_name=form.cleaned_data["name"], policy=form.cleaned_data["document"]
    )
    return _preview(request, caller, proposal)


@require_POST
def grant_request_preview(request: Any, request_id: int) -> HttpResponse:
    """A grant request's Preview step for its approvers: what approving it would give; nothing is saved."""
    caller = caller_from_request(request)
    grant_request = grant_request_get_for(caller=caller, request_id=request_id)
    proposal = services.Proposal(
        "CreateGrant",
        key_id=str(grant_request.key_id),
        grantee=grant_request.grantee_principal,
        operations=tuple(grant_request.operations),
        constraints=grant_request.constraints or None,
    )
    return _preview(request, caller, proposal)
