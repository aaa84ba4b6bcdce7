"""Reading principals and users' second factors."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django.core.paginator import Paginator
from django.db.models import Count, Exists, OuterRef, Q, Subquery

from kmsweb.lib.errors import AccessDenied, NotFound
from policies.filters import PER_PAGE
from policies.models import GrantRequest, GrantRequestDecision, GrantRequestState, Principal


class UnlinkedUser(AccessDenied):
    """A signed-in dashboard user no longer acts as any principal."""


def principal_for_user(user: Any) -> Principal:
    """The principal a dashboard user acts as (created at first login)."""
    principal = Principal.objects.filter(user=user).select_related("account").first()
    if principal is None:
        raise UnlinkedUser(f"Dashboard user {user.get_username()!r} is not linked to a principal.")
    return principal


def user_has_confirmed_device(user: Any) -> bool:
    from policies.models import TotpDevice

    return TotpDevice.objects.filter(user=user, confirmed=True).exists()


def principal_list_for(*, caller: Any) -> Any:
    """Principals of the caller's account with their policy and key counts."""
    from django.db.models import Count

    return (
        Principal.objects.filter(account_id=caller.account_id)
        .annotate(
            n_keys=Count("access_keys", distinct=True),
            n_inline=Count("inline_policies", distinct=True),
            n_attached=Count("attachments", distinct=True),
        )
        .select_related("user")
        .order_by("type", "name")
    )


def principal_get_for(*, caller: Any, principal_id: int) -> Principal:
    from kmsweb.lib.errors import NotFound

    principal = Principal.objects.filter(account_id=caller.account_id, pk=principal_id).select_related("user").first()
    if principal is None:
        raise NotFound(f"No principal {principal_id} in account {caller.account_id}.")
    return principal


def delegations_for(*, principal: Principal) -> Any:
    """The services the principal lets act for it, by service name (principal page)."""
    return principal.service_delegations.select_related("service").order_by("service__name")


def delegable_services_for(*, principal: Principal) -> Any:
    """The account's service principals the principal has not delegated to yet."""
    return (
        Principal.objects.filter(account_id=principal.account_id, type="service")
        .exclude(delegated_by__principal=principal)
        .order_by("name")
    )


def managed_policies_for(*, caller: Any) -> Any:
    from policies.models import IdentityPolicy

    return IdentityPolicy.objects.filter(account_id=caller.account_id, principal__isnull=True).order_by("name")


# --- Grant requests ----------------------------------------------------------


def principal_for_arn(arn: str) -> Principal | None:
    """The principal an IAM ARN names (``arn:aws:iam::<account>:<type>/<name>``), if it exists."""
    match = re.match(r"^arn:aws[a-z-]*:iam::(\d{12}):(user|role|service)/(?:.*/)?([^/]+)$", arn)
    if match is None:
        return None
    return Principal.objects.filter(account_id=match.group(1), type=match.group(2), name=match.group(3)).first()


def may_decide_grant_requests(*, caller: Any) -> bool:
    """Whether ``caller`` is an approver (``kmsweb:DecideGrantRequest``): asks the engine, never raises."""
    from policies.authorization import authorize

    try:
        authorize(caller=caller, action="kmsweb:DecideGrantRequest")
    except AccessDenied:
        return False
    return True


def grant_requests_visible_to(*, caller: Any, approver: bool | None = None) -> Any:
    """Requests the caller may see: its own, and as an approver every request on its account's keys."""
    if approver is None:
        approver = may_decide_grant_requests(caller=caller)
    mine = Q(requester_id=caller.principal_pk)
    return GrantRequest.objects.filter(mine | Q(key__account_id=caller.account_id) if approver else mine)


def grant_request_counts_for(*, caller: Any, approver: bool | None = None) -> dict[str, int]:
    """How many visible requests are in each state (one query), plus ``all``."""
    rows = grant_requests_visible_to(caller=caller, approver=approver).values("state").annotate(n=Count("id"))
    counts = dict.fromkeys(GrantRequestState.values, 0)
    counts.update({row["state"]: row["n"] for row in rows})
    counts["all"] = sum(counts.values())
    return counts


def grant_request_page_for(*, caller: Any, flt: Any, approver: bool | None = None) -> Any:
    """One page of the inbox, newest first, with keys, aliases, requesters and approval counts."""
    qs = (
        flt.apply(grant_requests_visible_to(caller=caller, approver=approver), principal_pk=caller.principal_pk)
        .select_related("key", "requester")
        .prefetch_related("key__aliases")
        .annotate(n_approvals=Count("decisions", filter=Q(decisions__verdict="approve")))
        .order_by("-created_at", "-pk")
    )
    return Paginator(qs, PER_PAGE).get_page(flt.page)


def grant_request_get_for(*, caller: Any, request_id: int, approver: bool | None = None) -> Any:
    """One request the caller may see; ``NotFound`` otherwise (its existence is not disclosed)."""
    request = (
        grant_requests_visible_to(caller=caller, approver=approver)
        .select_related("key", "requester", "requester__user", "grant")
        .filter(pk=request_id)
        .first()
    )
    if request is None:
        raise NotFound(f"Grant request {request_id} does not exist.")
    return request


def grant_request_get(*, request_id: int) -> Any:
    """One request by id, for services that decide themselves who may act on it."""
    request = GrantRequest.objects.select_related("key", "requester", "grant").filter(pk=request_id).first()
    if request is None:
        raise NotFound(f"Grant request {request_id} does not exist.")
    return request


def grant_request_timeline(*, request: Any, now: Any) -> list[dict[str, Any]]:
    """What happened to a request, oldest first: created, each decision, the grant and its end."""
    entries: list[dict[str, Any]] = [
        {"at": request.created_at, "kind": "created", "who": request.requester.arn, "text": request.justification}
    ]
    for decision in request.decisions.select_related("principal"):
        entries.append(
            {
                "at": decision.created_at,
                "kind": decision.verdict,
                "who": decision.principal.arn,
                "text": decision.comment,
            }
        )
    grant = request.grant
    if grant is not None:
        entries.append(
            {"at": grant.created_at, "kind": "grant-created", "who": grant.created_by, "text": grant.grant_id}
        )
        if grant.retired_at is not None:
            entries.append({"at": grant.retired_at, "kind": f"grant-{grant.retired_how}", "who": "", "text": ""})
        elif grant.expires_at is not None and grant.expires_at <= now:
            entries.append({"at": grant.expires_at, "kind": "grant-expired", "who": "", "text": ""})
    if request.state == "expired" and request.decided_at is not None:
        entries.append({"at": request.decided_at, "kind": "expired", "who": "", "text": ""})
    return sorted(entries, key=lambda e: e["at"])


def grant_request_waiting_count_for_user(*, user: Any) -> int:
    """The sidebar's count in one query: for an approver (by role), pending requests on its
    account's keys that it did not ask for and has not approved; for anyone else, its own pending ones."""
    from django.contrib.auth import get_user_model

    account = Subquery(Principal.objects.filter(user_id=user.pk).values("account_id")[:1])
    mine = Q(requester__user_id=user.pk)
    approved = GrantRequestDecision.objects.filter(
        request=OuterRef("pk"), principal__user_id=user.pk, verdict="approve"
    )
    to_decide = Q(key__account_id=account) & ~mine & ~Q(Exists(approved))
    if user.is_superuser:  # superusers hold every role
        waiting = to_decide
    else:
        member = Q(Exists(get_user_model().groups.through.objects.filter(user_id=user.pk, group__name="approver")))
        waiting = (member & to_decide) | (~member & mine)
    return GrantRequest.objects.filter(state=GrantRequestState.PENDING).filter(waiting).count()


# --- People ------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    """A dashboard user as the People pages show them."""

    user: Any
    roles: tuple[str, ...]
    mfa: str  # totp, totp-pending, provider or none
    locked_out: bool
    sso: Any  # OidcIdentity or None
    principal: Principal | None


def _people_authorize(caller: Any) -> None:
    from policies.authorization import authorize

    authorize(caller=caller, action="iam:ListUsers")


def _locked_usernames(usernames: list[str]) -> set[str]:
    from axes.models import AccessAttempt
    from django.conf import settings
    from django.utils import timezone

    since = timezone.now() - settings.AXES_COOLOFF_TIME
    return set(
        AccessAttempt.objects.filter(
            username__in=usernames, failures_since_start__gte=settings.AXES_FAILURE_LIMIT, attempt_time__gte=since
        ).values_list("username", flat=True)
    )


def _people(users: list[Any]) -> list[Person]:
    from policies.models import ProviderMfaDevice, TotpDevice
    from policies.roles import ALL_ROLES

    ids = [u.pk for u in users]
    totp: dict[int, set[bool]] = {}
    for user_id, confirmed in TotpDevice.objects.filter(user_id__in=ids).values_list("user_id", "confirmed"):
        totp.setdefault(user_id, set()).add(confirmed)
    provider = set(ProviderMfaDevice.objects.filter(user_id__in=ids, confirmed=True).values_list("user_id", flat=True))
    principals = {p.user_id: p for p in Principal.objects.filter(user_id__in=ids)}
    locked = _locked_usernames([u.get_username() for u in users])
    people = []
    for user in users:
        devices = totp.get(user.pk, set())
        mfa = (
            "totp" if True in devices else "provider" if user.pk in provider else "totp-pending" if devices else "none"
        )
        roles = ALL_ROLES if user.is_superuser else tuple(sorted(g.name for g in user.groups.all()))
        people.append(
            Person(
                user=user,
                roles=roles,
                mfa=mfa,
                locked_out=user.get_username() in locked,
                sso=getattr(user, "oidc_identity", None),
                principal=principals.get(user.pk),
            )
        )
    return people


def people_list_for(*, caller: Any) -> list[Person]:
    """Every dashboard user with roles, second factor and lockout; administrators only (``iam:ListUsers``)."""
    from django.contrib.auth import get_user_model

    _people_authorize(caller)
    users = list(
        get_user_model().objects.select_related("oidc_identity").prefetch_related("groups").order_by("username")
    )
    return _people(users)


def person_get_for(*, caller: Any, user_id: int) -> Person:
    """One dashboard user for the People pages, or ``NotFound``; administrators only."""
    from django.contrib.auth import get_user_model

    _people_authorize(caller)
    user = get_user_model().objects.select_related("oidc_identity").filter(pk=user_id).first()
    if user is None:
        raise NotFound(f"No dashboard user {user_id}.")
    return _people([user])[0]


def person_target(*, user_id: int) -> Any:
    """The dashboard user a People page change names, or ``NotFound``.

    Not authorized here: the change's service authorizes and audits, so a
    refused (forged) request is recorded.
    """
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.filter(pk=user_id).first()
    if user is None:
        raise NotFound(f"No dashboard user {user_id}.")
    return user


def account_for(*, caller: Any) -> Any:
    """The caller's account (where the dashboard creates principals)."""
    from policies.models import Account

    account = Account.objects.filter(pk=caller.account_id).first()
    if account is None:
        raise NotFound(f"No account {caller.account_id}.")
    return account
