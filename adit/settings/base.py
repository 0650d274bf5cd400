# pyright: reportArgumentType=false
# (django-environ types its defaults as NoValue.)
"""Settings shared by every environment; all configuration comes from environment variables.

Every variable is documented in `example.env`. A `.env` file in the project folder is read
when present; variables already set in the environment win.
"""

import ipaddress
import os
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
if (BASE_DIR / ".env").exists():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


def _unset_empty_variables() -> None:
    """Treat `NAME=` (as written in example.env) like an unset variable, so defaults apply."""
    example = BASE_DIR / "example.env"
    if not example.exists():
        return
    for line in example.read_text().splitlines():
        name = line.split("=", 1)[0].strip()
        if name and not name.startswith("#") and os.environ.get(name) == "":
            del os.environ[name]


_unset_empty_variables()

SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
DEBUG = False
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django.contrib.postgres",
    "channels",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "django_cotton",
    "procrastinate.contrib.django",
    "adit.accounts",
    "adit.core",
    "adit.dicom_web",
    "adit.api",
    "adit.selective_transfer",
    "adit.batch_query",
    "adit.batch_transfer",
    "adit.audit",
    "adit.observability",
    "adit.dicom_explorer",
    "adit.upload",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "adit.core.middleware.RequestLimitsMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "adit.accounts.middleware.ActiveGroupMiddleware",
    "adit.core.middleware.MaintenanceMiddleware",
]

ROOT_URLCONF = "adit.urls"
ASGI_APPLICATION = "adit.asgi.application"
WSGI_APPLICATION = "adit.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "adit" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "adit.core.context_processors.base_context",
            ],
            "builtins": ["django_cotton.templatetags.cotton"],
        },
    }
]

# --- Database: DATABASE_URL, or ADIT's own embedded PostgreSQL when unset ----------------------
ADIT_DATA_DIR = Path(env.str("ADIT_DATA_DIR", default=str(BASE_DIR / ".adit-data"))).resolve()


def _database_url() -> str:
    url = env.str("DATABASE_URL", default="")
    if url:
        return url
    from adit import embedded_postgres

    return embedded_postgres.ensure_running_for_process(ADIT_DATA_DIR)


DATABASES = {"default": env.db_url_config(_database_url())}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=0)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = ["adit.accounts.backends.ActiveGroupModelBackend"]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = Path(env.str("DJANGO_STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "adit" / "static"]
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

# --- Mail ---------------------------------------------------------------------------------------
EMAIL_CONFIG = env.email_url("DJANGO_EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
SERVER_EMAIL = env.str("DJANGO_SERVER_EMAIL", default="adit@localhost")
DEFAULT_FROM_EMAIL = SERVER_EMAIL
ADMINS = [("ADIT admin", email) for email in env.list("DJANGO_ADMIN_EMAILS", default=[])]
EMAIL_SUBJECT_PREFIX = "[ADIT] "
SUPPORT_EMAIL = env.str("SUPPORT_EMAIL", default=SERVER_EMAIL)

# --- Superuser bootstrap (manage.py create_superuser, cli serve) --------------------------------
SUPERUSER_USERNAME = env.str("SUPERUSER_USERNAME", default="admin")
SUPERUSER_EMAIL = env.str("SUPERUSER_EMAIL", default="admin@localhost")
SUPERUSER_PASSWORD = env.str("SUPERUSER_PASSWORD", default="")
SUPERUSER_AUTH_TOKEN = env.str("SUPERUSER_AUTH_TOKEN", default="")

# --- API tokens and REST framework --------------------------------------------------------------
TOKEN_AUTHENTICATION_SALT = env.str("TOKEN_AUTHENTICATION_SALT", default="")
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["adit.accounts.authentication.TokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
    # Rate limiting per API token (adit.dicom_web.throttling); e.g. "1000/hour", empty = none.
    "DEFAULT_THROTTLE_CLASSES": ["adit.dicom_web.throttling.TokenRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"api_token": env.str("API_THROTTLE_RATE", default="") or None},
}
SPECTACULAR_SETTINGS = {
    "TITLE": "ADIT API",
    "DESCRIPTION": "Search, retrieve and store DICOM data through ADIT (DICOMweb: QIDO-RS, "
    "WADO-RS, STOW-RS under /api/dicom-web/<AE title>/) and run transfer and batch query jobs. "
    "Create a token on ADIT's API tokens page and send it with every request in the header "
    "`Authorization: Token <token>`. From Python, use the `adit-client` package.",
    "VERSION": "1",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "adit.dicom_web.openapi.add_dicomweb_paths",
    ],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Channels (WebSockets) ----------------------------------------------------------------------
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- Procrastinate (task queue in PostgreSQL) ---------------------------------------------------
PROCRASTINATE_ON_APP_READY = "adit.core.tasks.on_app_ready"
# Finished queue rows older than this are removed by the periodic housekeeping task.
PROCRASTINATE_PRUNE_FINISHED_AFTER_DAYS = env.int("PROCRASTINATE_PRUNE_AFTER_DAYS", default=30)
# A worker whose heartbeat is older than this is considered dead; its jobs are retried.
STALLED_JOB_SECONDS = env.int("STALLED_JOB_SECONDS", default=60)

# --- DICOM --------------------------------------------------------------------------------------
CALLING_AE_TITLE = env.str("CALLING_AE_TITLE", default="ADIT")
RECEIVER_AE_TITLE = env.str("RECEIVER_AE_TITLE", default="ADIT")
STORE_SCP_HOST = env.str("STORE_SCP_HOST", default="127.0.0.1")
STORE_SCP_PORT = env.int("STORE_SCP_PORT", default=11112)
FILE_TRANSMIT_HOST = env.str("FILE_TRANSMIT_HOST", default="127.0.0.1")
FILE_TRANSMIT_PORT = env.int("FILE_TRANSMIT_PORT", default=14638)
# Key workers prove to the receiver before it streams images to them; empty: derived from
# SECRET_KEY (see adit.core.dicom_settings.file_transmit_secret).
FILE_TRANSMIT_SECRET = env.str("FILE_TRANSMIT_SECRET", default="")
EXCLUDE_MODALITIES = env.list("EXCLUDE_MODALITIES", default=["PR", "SR"])
FOLDERS_MOUNT_DIR = Path(env.str("FOLDERS_MOUNT_DIR", default=str(ADIT_DATA_DIR / "folders")))
PSEUDONYM_SALT = env.str("PSEUDONYM_SALT", default="")

SITE_NAME = env.str("SITE_NAME", default="ADIT")
# Used in links of emails (no request is around when a worker sends them).
SITE_BASE_URL = env.str("SITE_BASE_URL", default="http://127.0.0.1:8000")

# --- Job engine ---------------------------------------------------------------------------------
# Attempts of a task that hits transient errors (a PACS or ADIT's receiver down, busy, timing
# out). With the delays below the defaults wait 30 + 60 + 120 + 240 s: 7.5 minutes, long enough
# for a PACS or the receiver to restart, before the task counts as failed.
DICOM_TASK_MAX_ATTEMPTS = env.int("DICOM_TASK_MAX_ATTEMPTS", default=5)
# Seconds before the first retry of a task after a transient error; doubles with each attempt,
# up to DICOM_TASK_RETRY_MAX_DELAY.
DICOM_TASK_RETRY_DELAY = env.int("DICOM_TASK_RETRY_DELAY", default=30)
DICOM_TASK_RETRY_MAX_DELAY = env.int("DICOM_TASK_RETRY_MAX_DELAY", default=600)
# How long a worker keeps trying to record a task's outcome while PostgreSQL is unreachable.
DICOM_TASK_DATABASE_WAIT = env.int("DICOM_TASK_DATABASE_WAIT", default=3600)
# A task running longer than this (seconds) is stopped and fails.
DICOM_TASK_TIME_LIMIT = env.int("DICOM_TASK_TIME_LIMIT", default=3 * 3600)
# How long an aborted task may take to stop before the worker records the abort regardless.
DICOM_TASK_ABORT_GRACE_SECONDS = env.int("DICOM_TASK_ABORT_GRACE_SECONDS", default=30)
# Test settings only: a callable `hook(phase, task_label)` run as a task enters each phase.
DICOM_TASK_PHASE_HOOK: str | None = None
# C-STORE associations a task may use side by side when the destination has free slots
# (its max_associations); most PACS store faster in parallel.
DICOM_STORE_ASSOCIATIONS = env.int("DICOM_STORE_ASSOCIATIONS", default=2)
# A dicom worker keeps an association that ended cleanly (and the association slot it holds)
# this many seconds for the next task to the same server; 0 turns the reuse off.
DICOM_ASSOCIATION_IDLE_SECONDS = env.float("DICOM_ASSOCIATION_IDLE_SECONDS", default=5.0)

# --- Selective transfer -------------------------------------------------------------------------
SELECTIVE_TRANSFER_DEFAULT_PRIORITY = 4
SELECTIVE_TRANSFER_URGENT_PRIORITY = 8
# At most this many query results are shown; with more, the user is asked to narrow the query.
SELECTIVE_TRANSFER_RESULT_LIMIT = env.int("SELECTIVE_TRANSFER_RESULT_LIMIT", default=100)
# How many studies a non-staff user may transfer in one job.
SELECTIVE_TRANSFER_MAX_SELECTION = env.int("SELECTIVE_TRANSFER_MAX_SELECTION", default=10)
# Jobs of non-staff users wait for a staff member's verification unless this is true.
START_SELECTIVE_TRANSFER_UNVERIFIED = env.bool("START_SELECTIVE_TRANSFER_UNVERIFIED", default=True)

# --- DICOM explorer ------------------------------------------------------------------------------
# Rows shown per level; with more, the page says how many more there are and asks to refine.
DICOM_EXPLORER_RESULT_LIMIT = env.int("DICOM_EXPLORER_RESULT_LIMIT", default=100)
# Seconds a user's repeated query (same server, same keys) is answered from the cache.
DICOM_EXPLORER_CACHE_TTL = env.int("DICOM_EXPLORER_CACHE_TTL", default=60)
# Seconds to wait for a server to accept a connection / answer a query from the explorer: an
# interactive page must say "not reachable" long before a transfer would give up.
DICOM_EXPLORER_CONNECT_TIMEOUT = env.float("DICOM_EXPLORER_CONNECT_TIMEOUT", default=5.0)
DICOM_EXPLORER_QUERY_TIMEOUT = env.float("DICOM_EXPLORER_QUERY_TIMEOUT", default=30.0)

# --- Batch query and batch transfer ------------------------------------------------------------
# Rows of one batch file for non-staff users (staff: BATCH_FILE_MAX_ROWS).
MAX_BATCH_QUERY_ROWS = env.int("MAX_BATCH_QUERY_ROWS", default=1000)
MAX_BATCH_TRANSFER_ROWS = env.int("MAX_BATCH_TRANSFER_ROWS", default=500)
# Rows of one batch file for anybody, and the largest batch file (bytes).
BATCH_FILE_MAX_ROWS = env.int("BATCH_FILE_MAX_ROWS", default=20000)
BATCH_FILE_MAX_SIZE = env.int("BATCH_FILE_MAX_SIZE", default=5 * 1024 * 1024)
# A batch transfer needs the ID of the ethics committee's approval.
ETHICS_APPROVAL_REQUIRED = env.bool("ETHICS_APPROVAL_REQUIRED", default=True)
# Jobs of non-staff users wait for a staff member's verification unless these are true.
START_BATCH_QUERY_UNVERIFIED = env.bool("START_BATCH_QUERY_UNVERIFIED", default=True)
START_BATCH_TRANSFER_UNVERIFIED = env.bool("START_BATCH_TRANSFER_UNVERIFIED", default=True)

# --- Upload -------------------------------------------------------------------------------------
# The largest file (bytes) and the largest upload job (bytes, all its files) the browser may send.
UPLOAD_MAX_FILE_SIZE = env.int("UPLOAD_MAX_FILE_SIZE", default=200 * 1024 * 1024)
UPLOAD_MAX_JOB_SIZE = env.int("UPLOAD_MAX_JOB_SIZE", default=20 * 1024 * 1024 * 1024)
# Where received files wait (on disk, never in memory) until a worker stores them.
UPLOAD_STAGING_DIR = Path(
    env.str("UPLOAD_STAGING_DIR", default=str(ADIT_DATA_DIR / "upload-staging"))
)
# While the browser still sends, every this many received instances are handed to a worker at
# once (stored while the rest arrives); 0: nothing is stored before the browser commits the job.
UPLOAD_DISPATCH_INSTANCES = env.int("UPLOAD_DISPATCH_INSTANCES", default=48)
# An upload whose page sent nothing for this many minutes without finishing (closed, crashed,
# offline) is ended by the default worker: what arrived is stored and the job says the upload
# was interrupted (Warning; Failure when nothing arrived).
UPLOAD_ABANDONED_AFTER_MINUTES = env.int("UPLOAD_ABANDONED_AFTER_MINUTES", default=60)
# Jobs of non-staff users wait for a staff member's verification unless this is true.
START_UPLOAD_UNVERIFIED = env.bool("START_UPLOAD_UNVERIFIED", default=True)

# --- Audit trail --------------------------------------------------------------------------------
# Audit entries older than this many days are removed by `manage.py purge_audit_log`.
AUDIT_RETENTION_DAYS = env.int("AUDIT_RETENTION_DAYS", default=3650)
# Also send each entry as an RFC 5424 syslog message (RFC 3881-style content) to this
# "host:port" over UDP, e.g. "siem.example.org:514"; empty: do not.
AUDIT_SYSLOG_ADDRESS = env.str("AUDIT_SYSLOG_ADDRESS", default="")

# --- Observability ------------------------------------------------------------------------------
# /metrics (Prometheus) answers a request with `Authorization: Bearer <METRICS_TOKEN>` or from an
# address in METRICS_ALLOWED_IPS (addresses or networks); without either setting, nobody.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_ALLOWED_NETWORKS = [
    ipaddress.ip_network(entry, strict=False)
    for entry in env.list("METRICS_ALLOWED_IPS", default=[])
]
# "json": one JSON object per log line (for log collectors such as Loki or Elasticsearch).
LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be 'plain' or 'json', not {LOG_FORMAT!r}")
# Daily database backups (switched on by staff in the admin): where and at which hour.
DB_BACKUP_DIR = Path(env.str("DB_BACKUP_DIR", default=str(ADIT_DATA_DIR / "backups")))
DB_BACKUP_HOUR = env.int("DB_BACKUP_HOUR", default=2)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "{asctime} {levelname} {name}: {message}", "style": "{"},
        # python-json-logger: fields time, level, logger, message (+ exc_info, extra fields).
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT},
        "mail_admins": {
            "class": "django.utils.log.AdminEmailHandler",
            "level": "CRITICAL",
        },
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "adit": {"handlers": ["console", "mail_admins"], "level": "INFO", "propagate": False},
        "procrastinate": {"level": "WARNING"},
        "pynetdicom": {"level": "WARNING"},
        "pydicom": {"level": "WARNING"},
    },
}
