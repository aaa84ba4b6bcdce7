"""Dashboard gatekeeping and error display, written once for every view."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django_htmx.http import reswap, retarget

from kmsweb.api.views import is_api_request
from kmsweb.lib.errors import KmsError
from kmsweb.lib.generations import generations_scope

# Paths reachable without a verified second factor.
# The audit signing public keys are public: anyone verifying an export needs them.
_OPEN_PREFIXES = ("/login/", "/logout/", "/mfa/", "/healthz", "/audit/public-keys")
# kmsweb's own REST API: SigV4-signed like the KMS API, not a dashboard page;
# its views answer every error themselves, in JSON.
API_PREFIX = "/api/"


class CacheGenerationMiddleware:
    """Each request's cache lookups see every change answered before it started.

    Opens the request's scope of ``kmsweb.lib.generations``: the dashboard
    and kmsweb's REST API read the same per-process caches as the KMS API.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with generations_scope():
            return self.get_response(request)


class DashboardAccessMiddleware:
    """Every dashboard page needs a logged-in user who passed TOTP.

    A user without a confirmed TOTP device is sent to enrol one. The AWS API
    (SigV4) and static files are not dashboard pages.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path
        if (
            is_api_request(request)
            or path.startswith(API_PREFIX)
            or path.startswith("/" + settings.STATIC_URL.lstrip("/"))
            or path.startswith(_OPEN_PREFIXES)
        ):
            return self.get_response(request)
        user = request.user
        if not user.is_authenticated:
            expired = "&expired=1" if _session_expired(request) else ""
            return _redirect(request, f"{reverse('policies:login')}?next={quote(request.get_full_path())}{expired}")
        if not user.is_verified():  # type: ignore[union-attr]
            from policies.selectors import user_has_confirmed_device

            target = "policies:mfa_verify" if user_has_confirmed_device(user) else "policies:mfa_enroll"
            return _redirect(request, f"{reverse(target)}?next={request.get_full_path()}")
        return self.get_response(request)


# Set at sign-in and removed at sign-out: present on an anonymous request,
# it means the session ended on its own (it expired).
SESSION_HINT_COOKIE = "kmsweb_signed_in"


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
    the message shown there.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, KmsError) or is_api_request(request) or request.path.startswith(API_PREFIX):
            return None
        from policies.selectors import UnlinkedUser

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


class AwsApiMiddleware:
    """Serve the AWS JSON API before the dashboard's middleware runs.

    A SigV4-signed ``POST /`` with ``X-Amz-Target`` needs no session, CSRF
    token, user, second factor, CSP or lockout tracking: it authenticates
    itself. Answering it here, first in the stack, saves the API about a
    millisecond per call; everything else goes on down the stack.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info == "/" and is_api_request(request):
            from kmsweb.api.views import aws_endpoint

            return aws_endpoint(request)
        return self.get_response(request)
