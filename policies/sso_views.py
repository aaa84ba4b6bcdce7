"""Single sign-on pages: start the OpenID Connect flow, and take its answer.

Authlib runs the authorization-code flow with PKCE (S256) and a nonce,
and checks the ``id_token``: its signature against the provider's
published keys, its issuer, audience (our client id), expiry and nonce.
Only then does ``policies.services.oidc_sign_in`` see its claims. Both
pages are open to anonymous visitors (``@login_not_required``): they are
how one signs in.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.django_client import OAuth
from django.conf import settings
from django.contrib.auth import login as auth_login
from django.contrib.auth.decorators import login_not_required
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django_otp import login as otp_login
from joserfc.errors import JoseError

from kmsweb.lib.errors import KmsError
from policies import services
from policies.middleware import SESSION_HINT_COOKIE
from policies.selectors import user_has_confirmed_device
from policies.views import _next, _origin

logger = logging.getLogger(__name__)
_NEXT_SESSION_KEY = "kmsweb_oidc_next"
# Django's own backend: it refuses inactive users when it loads the session's
# user, which is how a user who lost every mapped group is signed out.
_SESSION_BACKEND = "django.contrib.auth.backends.ModelBackend"
_clients: dict[tuple[Any, ...], Any] = {}


def _client() -> Any:
    """The provider's client, one per configuration (its metadata and keys are cached in it)."""
    config = (
        settings.KMSWEB_OIDC_ISSUER,
        settings.KMSWEB_OIDC_CLIENT_ID,
        settings.KMSWEB_OIDC_CLIENT_SECRET,
        tuple(settings.KMSWEB_OIDC_SCOPES),
        settings.KMSWEB_OIDC_TIMEOUT_SECONDS,
    )
    client = _clients.get(config)
    if client is None:
        oauth = OAuth()
        client = oauth.register(
            "kmsweb",
            client_id=settings.KMSWEB_OIDC_CLIENT_ID,
            client_secret=settings.KMSWEB_OIDC_CLIENT_SECRET,
            server_metadata_url=f"{settings.KMSWEB_OIDC_ISSUER}/.well-known/openid-configuration",
            client_kwargs={
                "scope": " ".join(settings.KMSWEB_OIDC_SCOPES),
                "code_challenge_method": "S256",
                "default_timeout": settings.KMSWEB_OIDC_TIMEOUT_SECONDS,
            },
        )
        _clients.clear()
        _clients[config] = client
    return client


def _error_page(request: Any, message: str, status: int) -> HttpResponse:
    return render(request, "policies/sso_error.html", {"message": message}, status=status)


@login_not_required
@never_cache
@require_GET
def oidc_login(request: Any) -> HttpResponse:
    """Send the browser to the identity provider (code flow, PKCE, state, nonce)."""
    if not settings.KMSWEB_OIDC_ISSUER:
        raise Http404("Single sign-on is not configured.")
    request.session[_NEXT_SESSION_KEY] = _next(request)
    redirect_uri = request.build_absolute_uri(reverse("policies:oidc_callback"))
    try:
        return _client().authorize_redirect(request, redirect_uri)
    except (requests.RequestException, AuthlibBaseError, ValueError, KeyError) as exc:
        logger.warning("identity provider unreachable: %s", exc)
        _client_forget()
        services.oidc_sign_in_failed(reason=f"provider unreachable: {type(exc).__name__}", **_origin(request))
        return _error_page(
            request,
            "The identity provider could not be reached, so single sign-on is unavailable right now. "
            "Try again later, or ask an administrator.",
            status=503,
        )


@login_not_required
@never_cache
@require_GET
def oidc_callback(request: Any) -> HttpResponse:
    """Take the provider's answer: exchange the code, check the id_token, sign the user in."""
    if not settings.KMSWEB_OIDC_ISSUER:
        raise Http404("Single sign-on is not configured.")
    try:
        # Authlib checks the issuer and azp by default, but the audience only
        # when asked: a token for another client with azp=our id would pass.
        token = _client().authorize_access_token(
            request,
            claims_options={
                "iss": {"essential": True, "values": [settings.KMSWEB_OIDC_ISSUER]},
                "aud": {"essential": True, "values": [settings.KMSWEB_OIDC_CLIENT_ID]},
            },
        )
    except requests.RequestException as exc:
        logger.warning("identity provider unreachable at the token exchange: %s", exc)
        _client_forget()
        services.oidc_sign_in_failed(reason=f"provider unreachable: {type(exc).__name__}", **_origin(request))
        return _error_page(
            request, "The identity provider could not be reached to finish signing in. Try again later.", status=503
        )
    except (AuthlibBaseError, JoseError, ValueError, KeyError) as exc:
        logger.warning("identity provider answer refused: %r", exc)
        services.oidc_sign_in_failed(reason=f"refused: {type(exc).__name__}: {exc}", **_origin(request))
        return _error_page(
            request, "The identity provider's answer could not be verified, so you were not signed in.", status=400
        )
    claims = token.get("userinfo")
    if not claims:
        services.oidc_sign_in_failed(reason="no id_token", **_origin(request))
        return _error_page(request, "The identity provider sent no ID token, so you were not signed in.", status=400)
    try:
        signed_in = services.oidc_sign_in(claims=dict(claims), **_origin(request))
    except KmsError as exc:
        return _error_page(request, exc.message, status=403)
    target = request.session.pop(_NEXT_SESSION_KEY, None) or reverse("root")
    auth_login(request, signed_in.user, backend=_SESSION_BACKEND)
    if signed_in.mfa_device is not None:
        otp_login(request, signed_in.mfa_device)
        response = HttpResponseRedirect(target)
    else:
        step = "policies:mfa_verify" if user_has_confirmed_device(signed_in.user) else "policies:mfa_enroll"
        response = HttpResponseRedirect(f"{reverse(step)}?next={quote(target)}")
    response.set_cookie(SESSION_HINT_COOKIE, "1", httponly=True, samesite="Lax", secure=settings.SESSION_COOKIE_SECURE)
    return response


def _client_forget() -> None:
    # A provider that was down may come back with new metadata and keys.
    _clients.clear()
