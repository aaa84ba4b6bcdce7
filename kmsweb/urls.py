"""URL map: the dashboard and kmsweb's REST API.

The KMS API (``POST /``) is not routed here: ``kmsweb.api.wsgi`` answers it
before Django's request cycle, and ``kmsweb.api.middleware`` before any
other middleware where Django's handler serves (the test client). ``GET /``
is the dashboard's overview.
"""

from django.urls import include, path

from keys.views import overview

urlpatterns = [
    path("", overview, name="root"),
    path("", include("keys.urls")),
    path("", include("policies.urls")),
    path("", include("audit.urls")),
    path("", include("compliance.urls")),
]
