"""URL map: the AWS wire adapter at POST /, the dashboard everywhere else."""

from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt

from keys.views import overview
from kmsweb.api.views import aws_endpoint, is_api_request


@csrf_exempt
def root(request: HttpRequest) -> HttpResponse:
    """``POST /`` with X-Amz-Target is the KMS API (SigV4, not cookies, so no
    CSRF token); anything else is the dashboard's overview, which only
    answers GET."""
    if is_api_request(request):
        return aws_endpoint(request)
    return overview(request)


urlpatterns = [
    path("", root, name="root"),
    path("", include("keys.urls")),
    path("", include("policies.urls")),
    path("", include("audit.urls")),
    path("", include("compliance.urls")),
]
