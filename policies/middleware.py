"""The dashboard's gate and its error display, written once for every view.

The gate is decided per view, and fails closed: a view runs only for a user
who signed in with a password *and* passed the TOTP second factor, unless
the view itself carries one of two opt-outs:

* ``@login_not_required`` (Django's own marker): anyone may call it. The
  sign-in and sign-out pages, the audit signing public keys (anyone
  verifying an export needs them), and kmsweb's REST API, whose views
  authenticate every request by its SigV4 signature.
* :func:`mfa_not_required`: a user who passed the password step but not
  yet the second factor. The TOTP enrolment and verification pages only.

Nothing about the request itself (a header, a path prefix, the method)
opens the gate: those are the client's to choose. The KMS API never reaches
it: ``kmsweb.api.middleware.AwsApiMiddleware`` answers ``POST /`` first.
Static files are served by WhiteNoise, ahead of every view; an unknown URL
is a plain 404 from Django, which runs no view and shows nothing else.

Behind the gate, ``policies.callers.caller_from_request`` refuses anyone
but a verified user again, so one mistake does not open a view.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

from django.contrib import messages
from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django_htmx.http import reswap, retarget

from kmsweb.generations import generations_scope
from kmsweb.lib.errors import KmsError
from policies.selectors import UnlinkedUser, user_has_confirmed_device

View = TypeVar("View", bound=Callable[..., Any])

# Set at sign-in and removed at sign-out: present on an anonymous request,
# it means the session ended on its own (it expired).
SESSION_HINT_COOKIE = "kmsweb_signed_in"


def mfa_not_required(view: View) -> View:
    """Let a user who passed the password step, but not yet the second factor, call ``view``.

    Only for the pages where that second factor is enrolled or entered.
    """
    view.mfa_required = False  # type: ignore[attr-defined]
    return view


class CacheGenerationMiddleware:
    """Each request's cache lookups see every change answered before it started.

    Opens the request's scope of ``kmsweb.generations``: the dashboard
    and kmsweb's REST API read the same per-process caches as the KMS API.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with generations_scope():
            return self.get_response(request)


class DashboardAccessMiddleware:
    """Every view needs a logged-in user who passed TOTP, unless the view opts out.

    An anonymous visitor is sent to sign in (``next=`` the page asked for); a
    user who has only given a password is sent to verify a confirmed TOTP
    device, or to enrol one. HTMX requests get the redirect as
    ``HX-Redirect``, so the whole page reloads.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., Any],
        view_args: tuple[Any, ...],
        view_kwargs: dict[str, Any],
    ) -> HttpResponse | None:
        # Markers are read with "required" as the default: a view that says
        # nothing is gated.
        if not getattr(view_func, "login_required", True):
            return None
        user: Any = request.user
        if not user.is_authenticated:
            expired = "&expired=1" if _session_expired(request) else ""
            return _redirect(request, f"{reverse('policies:login')}?next={quote(request.get_full_path())}{expired}")
        # Without django_otp's middleware a user has no is_verified(): not verified.
        if getattr(view_func, "mfa_required", True) and not getattr(user, "is_verified", lambda: False)():
            target = "policies:mfa_verify" if user_has_confirmed_device(user) else "policies:mfa_enroll"
            return _redirect(request, f"{reverse(target)}?next={quote(request.get_full_path())}")
        return None


def _session_expired(request: HttpRequest) -> bool:
    return request.COOKIES.get(SESSION_HINT_COOKIE) == "1"


def _redirect(request: HttpRequest, url: str) -> HttpResponse:
    if getattr(request, "htmx", False):
        # A fragment request after the session expired: reload the whole page.
        response = HttpResponse(status=204)
        response["HX-Redirect"] = url
        return response
    return HttpResponseRedirect(url)


class KmsErrorMiddleware:
    """A ``KmsError`` from a dashboard view becomes a message, never a 500.

    HTMX requests get a 200 fragment retargeted to ``#flash`` (htmx 2 does
    not swap 4xx answers); plain requests go back where they came from with
    the message shown there. The API views answer every error themselves, in
    JSON, so none reaches this.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, KmsError):
            return None
        if isinstance(exception, UnlinkedUser):
            # Every page would fail the same way: end the session and say why.
            logout(request)
            return _redirect(request, f"{reverse('policies:login')}?unlinked=1")
        if getattr(request, "htmx", False):
            response = render(request, "partials/flash.html", {"error": exception})
            return reswap(retarget(response, "#flash"), "innerHTML")
        messages.error(request, f"{exception.code}: {exception.message}")
        back = request.META.get("HTTP_REFERER") or reverse("root")
        if not back.startswith("/") and not back.startswith(request.build_absolute_uri("/")):
            back = reverse("root")
        return HttpResponseRedirect(back)
