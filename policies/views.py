"""Sign-in: password, then a TOTP second factor; enrolment; sign-out.

Every attempt, good or bad, is audited by the services (ConsoleLogin and the
MFA events); failed passwords are also counted by django-axes, which locks
an account/IP pair out after repeated failures.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import login as auth_login
from django.contrib.auth import logout as auth_logout
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_otp import login as otp_login

from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import AlreadyExists, KmsError, MalformedPolicyDocument, NotFound, ValidationError
from policies import selectors, services
from policies.callers import caller_from_request
from policies.forms import PolicyDocumentForm, PrincipalCreateForm, TokenForm
from policies.middleware import SESSION_HINT_COOKIE, mfa_not_required
from policies.models import AccessKey, Account, Principal
from policies.roles import role_allows
from policies.selectors import user_has_confirmed_device
from policies.services import sts as sts_services


def _next(request: Any) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return reverse("root")


def _origin(request: Any) -> dict[str, Any]:
    return {
        "source_ip": request.META.get("REMOTE_ADDR"),
        "user_agent": request.META.get("HTTP_USER_AGENT", "")[:512],
    }


@login_not_required
@never_cache
@require_http_methods(["GET", "POST"])
def login(request: Any) -> HttpResponse:
    form = AuthenticationForm(request, data=request.POST or None)
    notice = ""
    if request.method == "POST" and not settings.KMSWEB_LOCAL_LOGIN:
        # Switched off: the password is not even checked (nor counted by django-axes).
        form = AuthenticationForm(request)
        notice = "Sign-in with a password is switched off: use single sign-on."
    elif request.method == "POST":
        if form.is_valid():
            user = form.get_user()
            try:
                # Before the session starts: a user who cannot act as a
                # principal must not be half signed in (every page would
                # then fail and redirect to itself).
                services.user_principal_ensure(user=user)
            except KmsError as exc:
                form.add_error(None, f"{exc.message} Ask an administrator to link your user to a principal.")
            else:
                services.console_login_record(
                    username=user.get_username(), user=user, success=True, mfa_used=False, **_origin(request)
                )
                auth_login(request, user)
                target = "policies:mfa_verify" if user_has_confirmed_device(user) else "policies:mfa_enroll"
                redirect = HttpResponseRedirect(f"{reverse(target)}?next={_next(request)}")
                redirect.set_cookie(
                    SESSION_HINT_COOKIE,
                    "1",
                    httponly=True,
                    samesite="Lax",
                    secure=settings.SESSION_COOKIE_SECURE,
                )
                return redirect
        services.console_login_record(
            username=request.POST.get("username", "")[:150],
            user=None,
            success=False,
            mfa_used=False,
            **_origin(request),
        )
    if request.method == "GET" and request.GET.get("expired"):
        notice = "Your session expired. Sign in again."
    elif request.method == "GET" and request.GET.get("unlinked"):
        notice = "Your user is no longer linked to a principal. Ask an administrator."
    context = {
        "form": form,
        "next": _next(request),
        "notice": notice,
        "sso_enabled": bool(settings.KMSWEB_OIDC_ISSUER),
        "local_login": settings.KMSWEB_LOCAL_LOGIN,
    }
    response = render(request, "policies/login.html", context)
    response.delete_cookie(SESSION_HINT_COOKIE, samesite="Lax")
    return response


@mfa_not_required
@never_cache
@require_http_methods(["GET", "POST"])
def mfa_verify(request: Any) -> HttpResponse:
    if not request.user.is_authenticated:
        return redirect("policies:login")
    if request.user.is_verified():
        return HttpResponseRedirect(_next(request))
    form = TokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            device = services.totp_verify(user=request.user, token=form.cleaned_data["token"], **_origin(request))
        except KmsError as exc:
            form.add_error("token", exc.message)
        else:
            otp_login(request, device)
            return HttpResponseRedirect(_next(request))
    return render(request, "policies/mfa_verify.html", {"form": form, "next": _next(request)})


@mfa_not_required
@never_cache
@require_http_methods(["GET", "POST"])
def mfa_enroll(request: Any) -> HttpResponse:
    if not request.user.is_authenticated:
        return redirect("policies:login")
    if user_has_confirmed_device(request.user):
        return redirect("policies:mfa_verify")
    form = TokenForm(request.POST or None)
    enrolment = services.totp_pending_device(user=request.user, **_origin(request))
    if request.method == "POST" and form.is_valid():
        try:
            device = services.totp_confirm(user=request.user, token=form.cleaned_data["token"], **_origin(request))
        except KmsError as exc:
            form.add_error("token", exc.message)
        else:
            otp_login(request, device)
            return HttpResponseRedirect(_next(request))
    return render(
        request,
        "policies/mfa_enroll.html",
        {"form": form, "next": _next(request), "enrolment": enrolment},
    )


@login_not_required
@require_POST
def logout(request: Any) -> HttpResponse:
    auth_logout(request)
    response = redirect("policies:login")
    response.delete_cookie(SESSION_HINT_COOKIE, samesite="Lax")
    return response


# --- Principals: identity policies and access keys ---------------------------

IAM_ACTIONS = (
    "iam:CreateAccessKey",
    "iam:UpdateAccessKey",
    "iam:DeleteAccessKey",
    "iam:PutPrincipalPolicy",
    "iam:AttachPrincipalPolicy",
    "iam:DetachPrincipalPolicy",
    "iam:CreatePolicy",
    "iam:CreatePrincipal",
    "iam:DeletePolicy",
    "iam:CreateServiceDelegation",
    "iam:DeleteServiceDelegation",
    "iam:EnableMFADevice",
    "iam:DeactivateMFADevice",
    "iam:UpdateAssumeRolePolicy",
)


def _iam_can(caller: Caller) -> dict[str, bool]:
    return {a.split(":")[1]: role_allows(caller.roles, a) for a in IAM_ACTIONS}


def _principal_list_page(request: Any, caller: Caller, **extra: Any) -> HttpResponse:
    context = {
        "principals": selectors.principal_list_for(caller=caller),
        "policies": selectors.managed_policies_for(caller=caller),
        "can": _iam_can(caller),
        "policy_form": PolicyDocumentForm(),
        "principal_form": PrincipalCreateForm(),
        "nav": "principals",
        **extra,
    }
    return render(request, "policies/principal_list.html", context)


@require_GET
def principal_list(request: Any) -> HttpResponse:
    return _principal_list_page(request, caller_from_request(request))


@require_POST
def principal_create(request: Any) -> HttpResponse:
    """Create an API principal (a user or a role) in the caller's account; the service authorizes."""
    caller = caller_from_request(request)
    form = PrincipalCreateForm(request.POST)
    if form.is_valid():
        try:
            principal = services.principal_create(
                caller=caller,
                account=selectors.account_for(caller=caller),
                name=form.cleaned_data["name"],
                type=form.cleaned_data["type"],
            )
        except (ValidationError, AlreadyExists) as exc:
            form.add_error("name", exc.message)
        else:
            return redirect("policies:principal_detail", principal_id=principal.pk)
    return _principal_list_page(request, caller, principal_form=form)


def _principal_context(caller: Caller, principal: Principal, **extra: Any) -> dict[str, Any]:
    now = timezone.now()
    access_keys = [
        {"key": k, "age_days": (now - k.created_at).days} for k in principal.access_keys.order_by("created_at")
    ]
    attached_ids = set(principal.attachments.values_list("policy_id", flat=True))
    context: dict[str, Any] = {
        "principal": principal,
        "access_keys": access_keys,
        "inline": principal.inline_policies.order_by("name"),
        "attached": selectors.managed_policies_for(caller=caller).filter(pk__in=attached_ids),
        "attachable": selectors.managed_policies_for(caller=caller).exclude(pk__in=attached_ids),
        "can": _iam_can(caller),
        "policy_form": PolicyDocumentForm(),
        "nav": "principals",
    }
    if principal.type != "service":
        # A principal manages its own delegations; administrators anyone's (the services decide).
        is_self = caller.principal_pk == principal.pk
        context["delegations"] = selectors.delegations_for(principal=principal)
        context["delegable"] = selectors.delegable_services_for(principal=principal)
        context["can_delegate"] = is_self or context["can"]["CreateServiceDelegation"]
        context["can_undelegate"] = is_self or context["can"]["DeleteServiceDelegation"]
    if principal.type == "role":
        context["trust_policy"] = principal.trust_policy
        context.setdefault("trust_error", "")
    else:
        context["mfa_devices"] = principal.mfa_devices.order_by("name")
    context["live_sessions"] = principal.sts_sessions.filter(expires_at__gt=now).count()
    context.update(extra)
    return context


def _principal_page(
    request: Any, caller: Caller, principal: Principal, status: int = 200, **extra: Any
) -> HttpResponse:
    return render(
        request, "policies/principal_detail.html", _principal_context(caller, principal, **extra), status=status
    )


@require_GET
def principal_detail(request: Any, principal_id: int) -> HttpResponse:
    caller = caller_from_request(request)
    principal = selectors.principal_get_for(caller=caller, principal_id=principal_id)
    return _principal_page(request, caller, principal)


@require_POST
def principal_access_key_create(request: Any, principal_id: int) -> HttpResponse:
    caller = caller_from_request(request)
    principal = selectors.principal_get_for(caller=caller, principal_id=principal_id)
    key, secret = services.access_key_create(caller=caller, principal=principal)
    # The secret is shown in this one response and never again.
    response = _principal_page(request, caller, principal, new_secret={"id": key.access_key_id, "secret": secret})
    response["Cache-Control"] = "no-store"
    return response


@require_POST
def principal_mfa_device_create(request: Any, principal_id: int) -> HttpResponse:
    """Enrol a virtual MFA device; its QR code and secret are shown in this one response."""
    caller = caller_from_request(request)
    principal = selectors.principal_get_for(caller=caller, principal_id=principal_id)
    try:
        enrolment = sts_services.mfa_device_create(
            caller=caller, principal=principal, name=request.POST.get("name", "").strip()
        )
    except (ValidationError, AlreadyExists) as exc:
        return _principal_page(request, caller, principal, mfa_error=exc.message)
    response = _principal_page(request, caller, principal, new_mfa=enrolment)
    response["Cache-Control"] = "no-store"
    return response


@require_POST
def principal_mfa_device_delete(request: Any, principal_id: int) -> HttpResponse:
    caller = caller_from_request(request)
    principal = selectors.principal_get_for(caller=caller, principal_id=principal_id)
    device = sts_services.mfa_device_for(principal=principal, name=request.POST.get("name", ""))
    sts_services.mfa_device_delete(caller=caller, device=device)
    return redirect("policies:principal_detail", principal_id=principal.pk)


@require_POST
def principal_trust_policy_put(request: Any, principal_id: int) -> HttpResponse:
    caller = caller_from_request(request)
    principal = selectors.principal_get_for(caller=caller, principal_id=principal_id)
    document = request.POST.get("document", "")
    try:
        sts_services.role_trust_policy_put(caller=caller, role=principal, document=document)
    except (MalformedPolicyDocument, ValidationError) as exc:
        # The operator's text stays in the form, with the reason beside it.
        return _principal_page(request, caller, principal, trust_policy=document, trust_error=exc.message)
    return redirect("policies:principal_detail", principal_id=principal.pk)


def _access_key(principal: Principal, access_key_id: str) -> AccessKey:
    key = principal.access_keys.filter(access_key_id=access_key_id).first()
    if key is None:
        raise NotFound(f"Access key {access_key_id!r} does not belong to {principal.arn}.")
    return key


@require_POST
def principal_access_key_status(request: Any, principal_id: int) -> HttpResponse:
    caller = caller_from_request(request)
    principal = selectors.principal_get_for(caller=caller, principal_id=principal_id)
    key = _access_key(principal, request.POST.get("access_key_id", ""))
    services.access_key_set_status(caller=caller, access_key=key, active=request.POST.get("active") == "true")
    return redirect("policies:principal_detail", principal_id=principal.pk)


@require_POST
def principal_access_key_delete(request: Any, principal_id: int) -> HttpResponse:
    caller = caller_from_request(request)
    principal = selectors.principal_get_for(caller=caller, principal_id=principal_id)
    key = _access_key(principal, request.POST.get("access_key_id", ""))
    services.access_key_delete(caller=caller, access_key=key)
    return redirect("policies:principal_detail", principal_id=principal.pk)


@require_POST
def principal_policy_put(request: Any, principal_id: int) -> HttpResponse:
    caller = caller_from_request(request)
    principal = selectors.principal_get_for(caller=caller, principal_id=principal_id)
    form = PolicyDocumentForm(request.POST)
    if form.is_valid():
        try:
            services.identity_policy_put(
                caller=caller,
                account=principal.account,
                name=form.cleaned_data["name"],
                document=form.cleaned_data["document"],
                principal=principal,
            )
        except (MalformedPolicyDocument, ValidationError, AlreadyExists) as exc:
            form.add_error("document" if isinstance(exc, MalformedPolicyDocument) else "name", exc.message)
    if form.errors:
        return _principal_page(request, caller, principal, policy_form=form)
    return redirect("policies:principal_detail", principal_id=principal.pk)


@require_POST
def principal_policy_delete(request: Any, principal_id: int) -> HttpResponse:
    caller = caller_from_request(request)
    principal = selectors.principal_get_for(caller=caller, principal_id=principal_id)
    policy = principal.inline_policies.filter(name=request.POST.get("name", "")).first()
    if policy is None:
        raise NotFound("No such inline policy.")
    services.identity_policy_delete(caller=caller, policy=policy)
    return redirect("policies:principal_detail", principal_id=principal.pk)


@require_POST
def principal_policy_attach(request: Any, principal_id: int) -> HttpResponse:
    caller = caller_from_request(request)
    principal = selectors.principal_get_for(caller=caller, principal_id=principal_id)
    policy = selectors.managed_policies_for(caller=caller).filter(name=request.POST.get("name", "")).first()
    if policy is None:
        raise NotFound("No such managed policy in this account.")
    if request.POST.get("detach") == "true":
        services.policy_detach(caller=caller, principal=principal, policy=policy)
    else:
        services.policy_attach(caller=caller, principal=principal, policy=policy)
    return redirect("policies:principal_detail", principal_id=principal.pk)


def _service(principal: Principal, name: str) -> Principal:
    service = Principal.objects.filter(account_id=principal.account_id, type="service", name=name).first()
    if service is None:
        raise NotFound(f"No service principal {name!r} in account {principal.account_id}.")
    return service


@require_POST
def principal_delegation_create(request: Any, principal_id: int) -> HttpResponse:
    caller = caller_from_request(request)
    principal = selectors.principal_get_for(caller=caller, principal_id=principal_id)
    service = _service(principal, request.POST.get("service", ""))
    services.service_delegation_create(caller=caller, principal=principal, service=service)
    return redirect("policies:principal_detail", principal_id=principal.pk)


@require_POST
def principal_delegation_delete(request: Any, principal_id: int) -> HttpResponse:
    caller = caller_from_request(request)
    principal = selectors.principal_get_for(caller=caller, principal_id=principal_id)
    service = _service(principal, request.POST.get("service", ""))
    services.service_delegation_delete(caller=caller, principal=principal, service=service)
    return redirect("policies:principal_detail", principal_id=principal.pk)


@require_POST
def managed_policy_put(request: Any) -> HttpResponse:
    caller = caller_from_request(request)
    form = PolicyDocumentForm(request.POST)
    if form.is_valid():
        try:
            services.identity_policy_put(
                caller=caller,
                account=_account(caller),
                name=form.cleaned_data["name"],
                document=form.cleaned_data["document"],
            )
        except (MalformedPolicyDocument, ValidationError, AlreadyExists) as exc:
            form.add_error("document" if isinstance(exc, MalformedPolicyDocument) else "name", exc.message)
    if form.errors:
        context = {
            "principals": selectors.principal_list_for(caller=caller),
            "policies": selectors.managed_policies_for(caller=caller),
            "can": _iam_can(caller),
            "policy_form": form,
            "nav": "principals",
        }
        return render(request, "policies/principal_list.html", context)
    return redirect("policies:principal_list")


def _account(caller: Caller) -> Account:
    return Account.objects.get(pk=caller.account_id)
