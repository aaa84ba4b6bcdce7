"""moto's server as a WSGI app, for gunicorn (configuration "moto-gunicorn").

This is the app that ``moto_server`` runs with werkzeug's threaded server.
moto keeps its state in process memory, so with several gunicorn workers a
key made through one worker would be unknown to the others.  With
``preload_app`` (bench/gunicorn.conf.py) this module is imported once in the
master before the workers fork, and the KMS key made here is inherited by
every worker.  The runner finds it with ListKeys.
"""

import os

from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.kms.models import kms_backends
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

REGION = os.environ.get("BENCH_REGION", "us-east-1")

application = DomainDispatcherApplication(create_backend_app)

BENCH_KEY = kms_backends[DEFAULT_ACCOUNT_ID][REGION].create_key(
    policy=None,
    key_usage="ENCRYPT_DECRYPT",
    key_spec="SYMMETRIC_DEFAULT",
    description="kmsweb bench key (made before fork)",
    tags=None,
)
