"""kmsweb's one settings module: everything comes from the environment.

See ``.env.example`` for every variable. Secrets have no defaults here:
``make run`` and ``make test`` generate them under ``var/`` (git-ignored)
and point the ``*_FILE`` variables at them.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dj_database_url
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

from kmsweb.lib.env import env_bool, env_int, env_job_intervals, env_list, env_secret, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("KMSWEB_VAR_DIR") or BASE_DIR / "var")

SECRET_KEY = env_secret("DJANGO_SECRET_KEY") or ""
if not SECRET_KEY:
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY or DJANGO_SECRET_KEY_FILE must be set (make run generates one under var/)"
    )
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost"])

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "django_otp",
    "axes",
    "csp",
    "kmsweb",
    "keys",
    "policies",
    "audit",
]

MIDDLEWARE = [
    # First: the SigV4 API needs none of the dashboard's middleware below.
    "kmsweb.api.middleware.AwsApiMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "kmsweb.lib.public_url.PublicUrlMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # The gate: every view needs a TOTP-verified user unless it opts out.
    "policies.middleware.DashboardAccessMiddleware",
    "policies.middleware.KmsErrorMiddleware",
    # Last, as django-axes asks: it turns lockouts into its response.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    # django-axes first: it refuses locked-out username/IP pairs before the
    # password is even checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "policies:login"

ROOT_URLCONF = "kmsweb.urls"
WSGI_APPLICATION = "kmsweb.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "policies.context_processors.grant_requests",
                "audit.context_processors.alarms",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'kmsweb.sqlite3'}",
        conn_max_age=env_int("KMSWEB_DB_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django's backend, with the per-request health check of a busy
    # persistent connection spaced out (kmsweb/lib/db/postgresql/base.py).
    DATABASES["default"]["ENGINE"] = "kmsweb.lib.db.postgresql"
# Seconds between health checks of a persistent database connection that is
# in use (0: before every request, as Django does).
KMSWEB_DB_HEALTH_CHECK_SECONDS = float(env_str("KMSWEB_DB_HEALTH_CHECK_SECONDS") or "1")
# PostgreSQL: the audit INSERT that every API call makes is prepared once per
# connection (a quarter less server CPU per call). Turn off behind a pooler
# that cannot carry prepared statements across transactions (PgBouncer in
# transaction mode before 1.21, or without max_prepared_statements).
KMSWEB_DB_PREPARED_STATEMENTS = env_bool("KMSWEB_DB_PREPARED_STATEMENTS", True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the worker and beat read while the web process writes.
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].update(
        {"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", "timeout": 20}
    )
# Denials must be audited even though the change they refused rolls back.
ATOMIC_REQUESTS = False
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
# Files browsers ask for at the site's root (/favicon.ico), served by WhiteNoise ahead of every view.
WHITENOISE_ROOT = BASE_DIR / "static" / "root"

# Cookies and headers: the dashboard is a security product.
SESSION_COOKIE_SECURE = env_bool("KMSWEB_SECURE_COOKIES", True)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env_int("KMSWEB_SESSION_SECONDS", 30 * 60)
SESSION_SAVE_EVERY_REQUEST = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if env_bool("KMSWEB_BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Failed sign-ins: five failures for a username from one address lock that
# pair out for 15 minutes (django-axes); each failure is also audited.
AXES_FAILURE_LIMIT = env_int("KMSWEB_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("KMSWEB_LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "policies/locked_out.html"
AXES_VERBOSE = False

# Content-Security-Policy: no inline script or style, nothing from elsewhere.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    }
}

# The domain.
KMSWEB_ACCOUNT_ID = env_str("KMSWEB_ACCOUNT_ID") or "111122223333"
if not (len(KMSWEB_ACCOUNT_ID) == 12 and KMSWEB_ACCOUNT_ID.isdigit()):
    raise ImproperlyConfigured("KMSWEB_ACCOUNT_ID must be 12 digits")
KMSWEB_DEFAULT_REGION = env_str("KMSWEB_DEFAULT_REGION") or "us-east-1"
KMSWEB_ROOT_KEY = env_secret("KMSWEB_ROOT_KEY")
# The root key file (when the key does not come inline): re-read when it
# changes, so a key added by rotate_root_key reaches running processes.
KMSWEB_ROOT_KEY_FILE = None if env_str("KMSWEB_ROOT_KEY") is not None else env_str("KMSWEB_ROOT_KEY_FILE")
if not KMSWEB_ROOT_KEY:
    raise ImproperlyConfigured(
        "KMSWEB_ROOT_KEY or KMSWEB_ROOT_KEY_FILE must be set (make run generates one under var/)"
    )
# Seconds an API process may reuse an access key or identity-policy lookup
# (changes made in the same process apply at once; 0 turns the cache off).
KMSWEB_AUTH_CACHE_SECONDS = float(env_str("KMSWEB_AUTH_CACHE_SECONDS") or "1")
# Regions a SigV4 credential scope may name; empty means any AWS-shaped name.
KMSWEB_REGIONS = env_list("KMSWEB_REGIONS", [])

# Grant requests: pending ones expire after this many days (a periodic job).
KMSWEB_GRANT_REQUEST_TTL_DAYS = env_int("KMSWEB_GRANT_REQUEST_TTL_DAYS", 7)
if KMSWEB_GRANT_REQUEST_TTL_DAYS < 1:
    raise ImproperlyConfigured("KMSWEB_GRANT_REQUEST_TTL_DAYS must be at least 1")
# Where people reach the dashboard (links in e-mails, webhooks and API answers). Empty: the
# serving request's own scheme and host (see kmsweb/lib/public_url.py). KMSWEB_DASHBOARD_URL
# is its former name, still read.
KMSWEB_PUBLIC_URL = (env_str("KMSWEB_PUBLIC_URL") or env_str("KMSWEB_DASHBOARD_URL") or "").rstrip("/")

# Email (grant request notifications): printed to the console unless an
# operator names another backend, e.g. django.core.mail.backends.smtp.EmailBackend.
EMAIL_BACKEND = env_str("EMAIL_BACKEND") or "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL") or "kmsweb <kmsweb@localhost>"
EMAIL_HOST = env_str("EMAIL_HOST") or "localhost"
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER") or ""
EMAIL_HOST_PASSWORD = env_secret("EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)

# Alarm webhooks: kmsweb refuses URLs that resolve to loopback, private or
# link-local addresses (a webhook must not reach into the internal network)
# unless this is true. Short timeouts keep a hanging endpoint from holding a
# worker; failed deliveries are retried with exponential backoff.
KMSWEB_WEBHOOK_ALLOW_PRIVATE = env_bool("KMSWEB_WEBHOOK_ALLOW_PRIVATE", False)
KMSWEB_WEBHOOK_CONNECT_TIMEOUT = float(env_str("KMSWEB_WEBHOOK_CONNECT_TIMEOUT") or "3")
KMSWEB_WEBHOOK_READ_TIMEOUT = float(env_str("KMSWEB_WEBHOOK_READ_TIMEOUT") or "5")
KMSWEB_NOTIFICATION_MAX_ATTEMPTS = env_int("KMSWEB_NOTIFICATION_MAX_ATTEMPTS", 6)
KMSWEB_NOTIFICATION_BACKOFF_SECONDS = env_int("KMSWEB_NOTIFICATION_BACKOFF_SECONDS", 30)

# Audit trail: events older than this many days are archived (export and
# signed manifest under the archive directory) and then deleted; 0 keeps all.
KMSWEB_AUDIT_RETENTION_DAYS = env_int("KMSWEB_AUDIT_RETENTION_DAYS", 365)
if KMSWEB_AUDIT_RETENTION_DAYS < 0:
    raise ImproperlyConfigured("KMSWEB_AUDIT_RETENTION_DAYS must be 0 (keep everything) or more")
KMSWEB_AUDIT_ARCHIVE_DIR = Path(env_str("KMSWEB_AUDIT_ARCHIVE_DIR") or VAR_DIR / "audit-archive")
# Dashboard export jobs write their bundles (and zips) here.
KMSWEB_AUDIT_EXPORT_DIR = Path(env_str("KMSWEB_AUDIT_EXPORT_DIR") or VAR_DIR / "audit-exports")

# Celery: Redis when REDIS_URL is set, else an embedded filesystem broker.
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
else:
    _broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "store_processed": False,
        # kombu's default is ./control, the current directory: keep it in var/.
        "control_folder": str(_broker_dir / "control"),
    }
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = 300
CELERY_TASK_TIME_LIMIT = 360
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# Each entry is named after its job (``manage.py run_job NAME``, ``JobRun.name``,
# the registry in kmsweb/jobs.py), so the Jobs page ties schedule and runs together.
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    # Every minute: seal the new audit events into a signed digest.
    "seal_audit": {"task": "audit.tasks.audit_seal_task", "schedule": 60.0},
    # Every minute: count the new audit events into the usage roll-ups (charts, alarms).
    "rollup_usage": {"task": "audit.tasks.usage_rollup_task", "schedule": 60.0},
    # Every minute: evaluate the alarms against the roll-ups and notify on state changes.
    "evaluate_alarms": {"task": "audit.tasks.alarms_evaluate_task", "schedule": 60.0},
    # Daily 03:10 UTC: archive and delete sealed events past retention.
    "archive_audit": {"task": "audit.tasks.audit_archive_task", "schedule": crontab(hour=3, minute=10)},
    # Hourly, on the hour: rotate the keys whose automatic rotation date has come.
    "rotate_keys": {"task": "keys.tasks.keys_rotate_due_task", "schedule": crontab(minute=0)},
    # Every 5 minutes: delete the keys whose deletion waiting period has ended.
    "delete_expired_keys": {"task": "keys.tasks.keys_delete_expired_task", "schedule": 300.0},
    # Every minute: delete imported key material whose expiration date (ValidTo) has passed.
    "expire_imported_material": {
        "task": "keys.tasks.keys_expire_imported_material_task",
        "schedule": 60.0,
    },
    # Every minute: retire the grants whose approved duration has ended.
    "expire_grants": {"task": "policies.tasks.grants_retire_expired_task", "schedule": 60.0},
    # Hourly, at 25 past: expire grant requests left pending too long.
    "expire_grant_requests": {"task": "policies.tasks.grant_requests_expire_task", "schedule": crontab(minute=25)},
}
# "JOB=SECONDS,...": run those jobs every SECONDS instead (demos, end-to-end tests).
for _job, _every in env_job_intervals("KMSWEB_JOB_INTERVALS", list(CELERY_BEAT_SCHEDULE)).items():
    CELERY_BEAT_SCHEDULE[_job]["schedule"] = _every

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("KMSWEB_LOG_LEVEL") or "INFO"},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
