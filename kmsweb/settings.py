"""kmsweb's one settings module: everything comes from the environment.

See ``.env.example`` for every variable. Secrets have no defaults here:
``make run`` and ``make test`` generate them as files under ``var/``
(git-ignored), and a ``*_FILE`` variable that is not set names that file
when it exists, so ``manage.py`` works beside ``make run`` without exports.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from celery.schedules import schedule
from django.core.exceptions import ImproperlyConfigured

from kmsweb.jobs import JOBS, beat_schedule
from kmsweb.lib.env import (
    env_bool,
    env_group_roles,
    env_int,
    env_job_intervals,
    env_list,
    env_rate_limits,
    env_secret,
    env_secret_file,
    env_str,
)
from policies.roles import ROLES

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("KMSWEB_VAR_DIR") or BASE_DIR / "var")

SECRET_KEY = env_secret("DJANGO_SECRET_KEY", default_file=VAR_DIR / "django_secret_key") or ""
if not SECRET_KEY:
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY or DJANGO_SECRET_KEY_FILE must be set, "
        f"or {VAR_DIR / 'django_secret_key'} exist (make run generates it)"
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
    "compliance",
]

MIDDLEWARE = [
    # First: the SigV4 API needs none of the dashboard's middleware below
    # (it opens its own scope of kmsweb.generations).
    "kmsweb.api.middleware.AwsApiMiddleware",
    # Before anything reads a cache: each request sees every change answered before it.
    "policies.middleware.CacheGenerationMiddleware",
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
                "policies.context_processors.people_nav",
                "audit.context_processors.alarms",
                "audit.context_processors.sealing",
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
# The audit events of concurrent read-only calls (Encrypt, Decrypt, Sign,
# Describe…) commit in one transaction per process; each call still answers
# after its event is durable (audit/services/writer.py). false: one INSERT each.
KMSWEB_AUDIT_GROUP_COMMIT = env_bool("KMSWEB_AUDIT_GROUP_COMMIT", True)
# How long at most a group writer's leader waits for the read-only calls
# already on their way in its process (audit/services/writer.py), in
# microseconds; 0: it writes at once.
KMSWEB_AUDIT_GROUP_WAIT_US = env_int("KMSWEB_AUDIT_GROUP_WAIT_US", 5000)
# /metrics (Prometheus): a bearer token, and/or client addresses (REMOTE_ADDR
# only, never X-Forwarded-For) in these networks. Neither set: /metrics is off (404).
KMSWEB_METRICS_TOKEN = env_secret("KMSWEB_METRICS_TOKEN") or ""
KMSWEB_METRICS_ALLOW_CIDRS = env_list("KMSWEB_METRICS_ALLOW_CIDRS")
# PostgreSQL behind PgBouncer in transaction mode: a server-side cursor
# (QuerySet.iterator()) outlives the transaction a pooled connection is lent
# for, so Django must not open one.
if env_bool("KMSWEB_DB_DISABLE_SERVER_SIDE_CURSORS", False):
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default has several writers (web workers, the Celery
    # worker's pool, beat, manage.py commands) on one file. WAL lets readers
    # run beside a writer. A transaction begun DEFERRED that reads and then
    # writes cannot wait for the write lock (SQLite answers "database is
    # locked" at once, whatever the timeout, because its snapshot may be
    # stale); IMMEDIATE takes the write lock at BEGIN, where the busy
    # timeout applies, so writers queue instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": env_int("KMSWEB_SQLITE_BUSY_TIMEOUT", 30),
        }
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
# Strict-Transport-Security on answers served over HTTPS (directly, or by the
# trusted proxy's header above); SecurityMiddleware never sends it over plain
# HTTP. One year by default where cookies are HTTPS-only, off otherwise (make
# run's http://127.0.0.1).
SECURE_HSTS_SECONDS = env_int("KMSWEB_HSTS_SECONDS", 365 * 86400 if SESSION_COOKIE_SECURE else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("KMSWEB_HSTS_INCLUDE_SUBDOMAINS", False)

# Single sign-on (OpenID Connect, docs/SSO.md): on when an issuer is set.
KMSWEB_OIDC_ISSUER = (env_str("KMSWEB_OIDC_ISSUER") or "").rstrip("/")
KMSWEB_OIDC_CLIENT_ID = env_str("KMSWEB_OIDC_CLIENT_ID") or ""
KMSWEB_OIDC_CLIENT_SECRET = env_secret("KMSWEB_OIDC_CLIENT_SECRET") or ""
KMSWEB_OIDC_SCOPES = env_list("KMSWEB_OIDC_SCOPES", ["openid", "profile", "email"])
KMSWEB_OIDC_GROUPS_CLAIM = env_str("KMSWEB_OIDC_GROUPS_CLAIM") or "groups"
KMSWEB_OIDC_GROUP_ROLES = env_group_roles("KMSWEB_OIDC_GROUP_ROLES", ROLES)
# amr values (RFC 8176) and acr values that mean the provider asked for a second factor.
KMSWEB_OIDC_MFA_AMR = env_list("KMSWEB_OIDC_MFA_AMR", ["mfa", "otp", "hwk", "swk", "sms"])
KMSWEB_OIDC_MFA_ACR = env_list("KMSWEB_OIDC_MFA_ACR", [])
KMSWEB_OIDC_TIMEOUT_SECONDS = env_int("KMSWEB_OIDC_TIMEOUT_SECONDS", 5)
if KMSWEB_OIDC_ISSUER and not (KMSWEB_OIDC_CLIENT_ID and KMSWEB_OIDC_CLIENT_SECRET):
    raise ImproperlyConfigured(
        "KMSWEB_OIDC_ISSUER needs KMSWEB_OIDC_CLIENT_ID and KMSWEB_OIDC_CLIENT_SECRET_FILE (or _SECRET)"
    )
if "openid" not in KMSWEB_OIDC_SCOPES:
    raise ImproperlyConfigured("KMSWEB_OIDC_SCOPES must include openid")
# Password + TOTP sign-in; false leaves single sign-on as the only way in.
KMSWEB_LOCAL_LOGIN = env_bool("KMSWEB_LOCAL_LOGIN", True)
if not KMSWEB_LOCAL_LOGIN and not KMSWEB_OIDC_ISSUER:
    raise ImproperlyConfigured("KMSWEB_LOCAL_LOGIN=false needs single sign-on (KMSWEB_OIDC_ISSUER)")

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
KMSWEB_ROOT_KEY = env_secret("KMSWEB_ROOT_KEY", default_file=VAR_DIR / "root_key")
# The root key file (when the key does not come inline): re-read when it
# changes, so a key added by rotate_root_key reaches running processes.
KMSWEB_ROOT_KEY_FILE = (
    None if env_str("KMSWEB_ROOT_KEY") is not None else env_secret_file("KMSWEB_ROOT_KEY", VAR_DIR / "root_key")
)
# The root key may instead (or as well) be an AES key inside a PKCS#11 token:
# wrapping and unwrapping then happen in the token. With both, the current
# one (KMSWEB_ROOT_KEY_CURRENT, "pkcs11" or "file"; pkcs11 when configured)
# wraps new material and the other still unwraps, until rotate_root_key has
# re-wrapped everything: that is how material moves between them.
KMSWEB_ROOT_KEY_PKCS11_LIBRARY = env_str("KMSWEB_ROOT_KEY_PKCS11_LIBRARY") or ""
KMSWEB_ROOT_KEY_PKCS11_TOKEN_LABEL = env_str("KMSWEB_ROOT_KEY_PKCS11_TOKEN_LABEL") or ""
KMSWEB_ROOT_KEY_PKCS11_PIN = env_secret("KMSWEB_ROOT_KEY_PKCS11_PIN") or ""
KMSWEB_ROOT_KEY_PKCS11_KEY_LABEL = env_str("KMSWEB_ROOT_KEY_PKCS11_KEY_LABEL") or "kmsweb-root-key"
KMSWEB_ROOT_KEY_CURRENT = env_str("KMSWEB_ROOT_KEY_CURRENT") or ("pkcs11" if KMSWEB_ROOT_KEY_PKCS11_LIBRARY else "file")
if KMSWEB_ROOT_KEY_CURRENT not in ("file", "pkcs11"):
    raise ImproperlyConfigured("KMSWEB_ROOT_KEY_CURRENT must be file or pkcs11")
if KMSWEB_ROOT_KEY_PKCS11_LIBRARY and not (KMSWEB_ROOT_KEY_PKCS11_TOKEN_LABEL and KMSWEB_ROOT_KEY_PKCS11_PIN):
    raise ImproperlyConfigured(
        "KMSWEB_ROOT_KEY_PKCS11_LIBRARY needs KMSWEB_ROOT_KEY_PKCS11_TOKEN_LABEL and KMSWEB_ROOT_KEY_PKCS11_PIN(_FILE)"
    )
if KMSWEB_ROOT_KEY_CURRENT == "pkcs11" and not KMSWEB_ROOT_KEY_PKCS11_LIBRARY:
    raise ImproperlyConfigured("KMSWEB_ROOT_KEY_CURRENT=pkcs11 needs KMSWEB_ROOT_KEY_PKCS11_LIBRARY")
if not KMSWEB_ROOT_KEY and KMSWEB_ROOT_KEY_CURRENT == "file":
    raise ImproperlyConfigured(
        f"KMSWEB_ROOT_KEY or KMSWEB_ROOT_KEY_FILE must be set, or {VAR_DIR / 'root_key'} exist (make run generates it)"
    )
# Custom key stores. AWS_CLOUDHSM stores are tokens of this PKCS#11 library
# (e.g. SoftHSM2's libsofthsm2.so); empty: no CloudHSM-type store can be made.
KMSWEB_PKCS11_LIBRARY = env_str("KMSWEB_PKCS11_LIBRARY") or ""
# EXTERNAL_KEY_STORE proxies: the HTTPS port kmsweb connects to (AWS's endpoints
# name none, so 443), the CA bundle that verifies their certificates (empty:
# the system's), and how long a proxy call may take.
KMSWEB_XKS_PROXY_PORT = env_int("KMSWEB_XKS_PROXY_PORT", 443)
KMSWEB_XKS_CA_BUNDLE = env_str("KMSWEB_XKS_CA_BUNDLE") or ""
KMSWEB_XKS_TIMEOUT_SECONDS = float(env_str("KMSWEB_XKS_TIMEOUT_SECONDS") or "5")
# As for alarm webhooks: a proxy host that resolves to a loopback, private or
# link-local address is refused unless this is true.
KMSWEB_XKS_ALLOW_PRIVATE = env_bool("KMSWEB_XKS_ALLOW_PRIVATE", False)
# Seconds a web process may serve a cached key, access key, identity policy or
# grant that was changed behind the services' back (changes made through the
# services apply to the next request everywhere: kmsweb.generations;
# 0 turns the caches off).
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
# The audit anchor: every digest is appended here (O_APPEND + fsync), outside
# the database, so a rewound or emptied trail is found. Put it on storage the
# database's administrators cannot rewrite (chattr +a, a WORM mount), visible
# to the workers, the web processes and verify_audit alike. Always on.
KMSWEB_AUDIT_ANCHOR_FILE = Path(env_str("KMSWEB_AUDIT_ANCHOR_FILE") or VAR_DIR / "audit_anchor.log")
# Optional: a sink the operator names (http or https) that receives every
# anchor line too, off the host; with the secret, requests carry an HMAC
# signature like the alarm webhooks'. docs/AUDIT.md describes the requests.
KMSWEB_AUDIT_ANCHOR_URL = env_str("KMSWEB_AUDIT_ANCHOR_URL") or ""
if KMSWEB_AUDIT_ANCHOR_URL and (
    urlsplit(KMSWEB_AUDIT_ANCHOR_URL).scheme not in ("http", "https") or not urlsplit(KMSWEB_AUDIT_ANCHOR_URL).hostname
):
    raise ImproperlyConfigured("KMSWEB_AUDIT_ANCHOR_URL must be an http:// or https:// URL")
KMSWEB_AUDIT_ANCHOR_SECRET = env_secret("KMSWEB_AUDIT_ANCHOR_SECRET") or ""

# Compliance rules: the tags every customer managed key must carry (none by default),
# how many idle days make a key, a grant or an access key a finding, and how long a
# change waits before the evaluation it triggers runs (changes in between join it).
KMSWEB_COMPLIANCE_REQUIRED_TAGS = env_list("KMSWEB_COMPLIANCE_REQUIRED_TAGS", [])
KMSWEB_COMPLIANCE_UNUSED_KEY_DAYS = env_int("KMSWEB_COMPLIANCE_UNUSED_KEY_DAYS", 90)
KMSWEB_COMPLIANCE_UNUSED_GRANT_DAYS = env_int("KMSWEB_COMPLIANCE_UNUSED_GRANT_DAYS", 90)
KMSWEB_COMPLIANCE_ACCESS_KEY_MAX_DAYS = env_int("KMSWEB_COMPLIANCE_ACCESS_KEY_MAX_DAYS", 90)
KMSWEB_COMPLIANCE_TRIGGER_DELAY_SECONDS = env_int("KMSWEB_COMPLIANCE_TRIGGER_DELAY_SECONDS", 30)
# Re-certification campaigns: the key tag naming a key's owners, the principal tag naming its manager.
KMSWEB_CAMPAIGN_OWNER_TAG = env_str("KMSWEB_CAMPAIGN_OWNER_TAG", "owner")
KMSWEB_CAMPAIGN_MANAGER_TAG = env_str("KMSWEB_CAMPAIGN_MANAGER_TAG", "manager")
for _name in ("UNUSED_KEY_DAYS", "UNUSED_GRANT_DAYS", "ACCESS_KEY_MAX_DAYS"):
    if globals()[f"KMSWEB_COMPLIANCE_{_name}"] < 1:
        raise ImproperlyConfigured(f"KMSWEB_COMPLIANCE_{_name} must be at least 1")

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
# Request quotas (ThrottlingException), requests per second by class
# (kmsweb/ratelimit.py): per account and Region, and per principal. Shared by
# every node through Redis when REDIS_URL is set, else counted per process.
_RATE_CLASSES = ("symmetric", "asymmetric", "random", "management")
KMSWEB_RATE_LIMITS = env_rate_limits(
    "KMSWEB_RATE_LIMITS",
    _RATE_CLASSES,
    {"symmetric": 5500, "asymmetric": 500, "random": 5500, "management": 1000},
)
KMSWEB_PRINCIPAL_RATE_LIMITS = env_rate_limits("KMSWEB_PRINCIPAL_RATE_LIMITS", _RATE_CLASSES, {})

# A broker outage is waited out, however long, at start and while running:
# Celery's default gives up after 100 tries (about 50 minutes) and the
# worker exits. `manage.py serve` also restarts a worker that exits.
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# Not cancelled on a lost connection: the job tasks are idempotent and
# acks_late redelivers them, and cancelling breaks the reconnect path
# (celery/celery#9250, AttributeError on reconnection).
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = 300
CELERY_TASK_TIME_LIMIT = 360
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# One entry per job declared in kmsweb/jobs.py (name, service, schedule,
# time limits), named after the job. "JOB=SECONDS,..." in KMSWEB_JOB_INTERVALS
# runs those jobs every SECONDS instead (demos, end-to-end tests).
CELERY_BEAT_SCHEDULE = beat_schedule(env_job_intervals("KMSWEB_JOB_INTERVALS", [job.name for job in JOBS]))

# The dashboard shows a banner on every page when an audit event has waited
# longer than this many seconds to be sealed, or the last seal_audit run
# failed. Default: twice seal_audit's interval, and at least 2 minutes.
_seal_every = CELERY_BEAT_SCHEDULE.get("seal_audit", {}).get("schedule")
_seal_seconds = _seal_every.run_every.total_seconds() if isinstance(_seal_every, schedule) else 60.0  # type: ignore[attr-defined]
KMSWEB_SEALING_BEHIND_SECONDS = env_int("KMSWEB_SEALING_BEHIND_SECONDS", int(max(120.0, 2 * _seal_seconds)))
if KMSWEB_SEALING_BEHIND_SECONDS < 1:
    raise ImproperlyConfigured("KMSWEB_SEALING_BEHIND_SECONDS must be at least 1")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("KMSWEB_LOG_LEVEL") or "INFO"},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
