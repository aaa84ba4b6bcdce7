"""URL map: the dashboard and kmsweb's REST API.

``/healthz``, ``/readyz`` and ``/metrics`` are kmsweb.health's.
The KMS API (``POST /``) is not routed here: ``kmsweb.api.wsgi`` answers it
before Django's request cycle, and ``kmsweb.api.middleware`` before any
other middleware where Django's handler serves (the test client). ``GET /``
is the dashboard's overview.
"""

from django.urls import include, path

from keys.views import overview
from kmsweb import health

ops = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics_view, name="metrics"),
]

urlpatterns = [
    path("", overview, name="root"),
    path("", include("keys.urls")),
    path("", include("policies.urls")),
    path("", include("audit.urls")),
    path("", include("compliance.urls")),
    # Probes and the Prometheus scrape (kmsweb.health), outside the dashboard's login.
    path("", include((ops, "ops"))),
]
