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
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST
from django_otp import login as otp_login

from kmsweb.lib.errors import KmsError
from kmsweb.lib.middleware import SESSION_HINT_COOKIE
from policies import services
from policies.forms import TokenForm
from policies.selectors import user_has_confirmed_device


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


@never_cache
@require_http_methods(["GET", "POST"])
def login(request: Any) -> HttpResponse:
    form = AuthenticationForm(request, data=request.POST or None)
    if request.method == "POST":
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
                response = HttpResponseRedirect(f"{reverse(target)}?next={_next(request)}")
                response.set_cookie(
                    SESSION_HINT_COOKIE,
                    "1",
                    httponly=True,
                    samesite="Lax",
                    secure=settings.SESSION_COOKIE_SECURE,
                )
                return response
        services.console_login_record(
            username=request.POST.get("username", "")[:150],
            user=None,
            success=False,
            mfa_used=False,
            **_origin(request),
        )
    notice = ""
    if request.method == "GET" and request.GET.get("expired"):
        notice = "Your session expired. Sign in again."
    elif request.method == "GET" and request.GET.get("unlinked"):
        notice = "Your user is no longer linked to a principal. Ask an administrator."
    response = render(request, "policies/login.html", {"form": form, "next": _next(request), "notice": notice})
    response.delete_cookie(SESSION_HINT_COOKIE, samesite="Lax")
    return response


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


@require_POST
def logout(request: Any) -> HttpResponse:
    auth_logout(request)
    response = redirect("policies:login")
    response.delete_cookie(SESSION_HINT_COOKIE, samesite="Lax")
    return response
