"""Settings of the floor Django project used by the benchmarks.

The floor is the smallest Django service that answers a KMS-shaped request:
no middleware, no installed apps, one view at ``POST /``.  Two modes, chosen
by the ``FLOOR_MODE`` environment variable:

* ``parse``        -- parse the JSON body and answer (configuration (a));
* ``crypto_audit`` -- the same, plus AES-256-GCM and one durable INSERT of an
  audit row into PostgreSQL in autocommit (configuration (b)).
"""

import os
from urllib.parse import unquote, urlsplit

FLOOR_MODE = os.environ.get("FLOOR_MODE", "parse")
if FLOOR_MODE not in ("parse", "crypto_audit"):
    raise RuntimeError(f"FLOOR_MODE must be parse or crypto_audit, not {FLOOR_MODE!r}")

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "kmsweb-bench-floor-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "floor.urls"
WSGI_APPLICATION = "floor.wsgi.application"
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
USE_TZ = True
TIME_ZONE = "UTC"
# A KMS request body is small, but a 4 KiB plaintext base64-encoded is
# larger than nothing: keep Django's default limit (2.5 MiB) which covers it.


def _database_from_url(url: str) -> dict:
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise RuntimeError(f"DATABASE_URL must be a postgres:// URL, not {url!r}")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")) or "kmsweb_bench",
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        # Persistent connections, as an operator would configure them: one
        # connection per worker thread, reused across requests.
        "CONN_MAX_AGE": None,
        "CONN_HEALTH_CHECKS": False,
        # Django's default: autocommit on, so each INSERT is its own durable
        # transaction (the server's synchronous_commit is left as it is: on).
        "AUTOCOMMIT": True,
    }


DATABASE_URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/kmsweb_bench")
DATABASES = {"default": _database_from_url(DATABASE_URL)} if FLOOR_MODE == "crypto_audit" else {}

# The floor's data key.  Not a secret: the benchmark needs the runner to be
# able to build a ciphertext that the floor decrypts (see bench/kmsreq.py).
FLOOR_KEY_HEX = os.environ.get("FLOOR_KEY_HEX", "")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
