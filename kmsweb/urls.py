"""URL map: the AWS wire adapter at POST /, pages everywhere else."""

from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from keys.views import home
from kmsweb.api.views import aws_endpoint, is_api_request


@csrf_exempt
def root(request: HttpRequest) -> HttpResponse:
    """``POST /`` with X-Amz-Target is the KMS API (SigV4, not cookies, so no
    CSRF token); anything else is a page, and pages here only answer GET."""
    if is_api_request(request):
        return aws_endpoint(request)
    return home(request)


urlpatterns = [
    path("", root, name="root"),
]
