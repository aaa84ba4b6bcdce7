"""The KMS API served first in Django's middleware stack."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from kmsweb.api.views import aws_endpoint, is_api_call


class AwsApiMiddleware:
    """Serve the AWS JSON API before the dashboard's middleware runs.

    A KMS API call (``POST /``, by :func:`~kmsweb.api.views.is_api_call`, the
    WSGI handler's test too) needs no session, CSRF token, user, second
    factor, CSP or lockout tracking: it authenticates itself by its SigV4
    signature. Answering it here, first in the stack, saves the API about a
    millisecond per call; everything else goes on down the stack, to the
    dashboard's gate.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if is_api_call(request.META):
            return aws_endpoint(request)
        return self.get_response(request)
