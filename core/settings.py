"""Django settings, read from the environment (and `.env`) through one django-environ reader.

With no `DATABASE_URL`/`POSTGRES_HOST` and no `CELERY_BROKER_URL` the service runs on embedded
defaults (SQLite and kombu's filesystem transport) for trying it out; production sets both.
"""
from __future__ import annotations

import ipaddress
import secrets
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# Where embedded mode keeps its SQLite file, broker folders, beat schedule and dev secret.
DATA_DIR = Path(env("DATA_DIR", default=str(BASE_DIR / "var")))

# Debug pages and verbose errors; never on in production.
DEBUG = env.bool("DEBUG", default=False)

# Host names this service answers to (comma-separated).
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])

# --- Database -----------------------------------------------------------------------------
if env("DATABASE_URL", default=""):
    DATABASES = {"default": env.db("DATABASE_URL")}
elif env("POSTGRES_HOST", default=""):
    # The starter's variables, used when DATABASE_URL is absent.
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": env("POSTGRES_DB", default="jobapi"),
            "USER": env("POSTGRES_USER", default="postgres"),
            "PASSWORD": env("POSTGRES_PASSWORD", default=""),
            "HOST": env("POSTGRES_HOST"),
            "PORT": env.int("POSTGRES_PORT", default=5432),
        }
    }
else:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "db.sqlite3",
            "OPTIONS": {
                # WAL lets the API read while a worker writes; IMMEDIATE takes the write lock at
                # BEGIN so two writers queue on the busy timeout instead of failing to upgrade.
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
        }
    }
EMBEDDED_DATABASE = DATABASES["default"]["ENGINE"].endswith("sqlite3")
if not EMBEDDED_DATABASE:
    # A new PostgreSQL connection costs ~20 ms: keep them, and check them before reuse.
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=600)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Secrets ------------------------------------------------------------------------------
SECRET_KEY = env("SECRET_KEY", default="")
if not SECRET_KEY:
    if not EMBEDDED_DATABASE:
        raise ImproperlyConfigured("SECRET_KEY must be set when running against PostgreSQL.")
    # Embedded (development) mode only: a random key kept beside the SQLite file.
    _secret_file = DATA_DIR / "secret-key"
    if not _secret_file.exists():
        _secret_file.write_text(secrets.token_urlsafe(50))
    SECRET_KEY = _secret_file.read_text().strip()

# --- Applications -------------------------------------------------------------------------
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "core",
    "webhooks",
    "jobs",
]

MIDDLEWARE = [
    "core.middleware.BodySizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Sessions and CSRF run on every path: each costs a few us when the API does not use it, and
    # `check --deploy` looks for these exact classes (security.W003, security.W012).
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    # Django users and messages serve the admin only: skipped for every other path.
    "core.middleware.AdminAuthenticationMiddleware",
    "core.middleware.AdminMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "core.urls"
WSGI_APPLICATION = "core.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "openapi" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns on every start without it
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve the docs' assets straight from the apps when collectstatic has not run (development).
WHITENOISE_USE_FINDERS = True

# --- HTTP edge ----------------------------------------------------------------------------
# Largest request body accepted, in bytes; larger ones get 413.
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = API_MAX_BODY_BYTES
# Deepest JSON nesting accepted in a request body.
API_MAX_JSON_DEPTH = env.int("API_MAX_JSON_DEPTH", default=32)
# Submissions per client per minute before 429 (0 turns the limit off).
API_SUBMIT_RATE_PER_MINUTE = env.int("API_SUBMIT_RATE_PER_MINUTE", default=600)
# Unfinished (PENDING, STARTED, RETRY) jobs one client may have at once before 429 (0: no cap).
JOB_MAX_UNFINISHED_PER_CLIENT = env.int("JOB_MAX_UNFINISHED_PER_CLIENT", default=10_000)
# How long an Idempotency-Key is remembered, in seconds.
IDEMPOTENCY_KEY_TTL_SECONDS = env.int("IDEMPOTENCY_KEY_TTL_SECONDS", default=24 * 3600)
# Seconds a process trusts a key it has checked before asking the database again (0: every
# request); also how long a revoked key may still work in the other processes.
API_KEY_CACHE_SECONDS = env.float("API_KEY_CACHE_SECONDS", default=5.0)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["core.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["core.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Job API",
    "DESCRIPTION": "Submit long-running jobs, poll them, and receive signed webhooks when they end.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # No validator badge: Swagger UI would fetch it from the internet.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "REDOC_DIST": "SIDECAR",
    # OpenAPI 3.1: JSON Schema payloads as they are, and the `webhooks` section.
    "OAS_VERSION": "3.1.0",
    "WEBHOOKS": "openapi.webhooks.WEBHOOKS",
    # Separate request/response components, so generated clients get exact types for both.
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "JobStatus": "jobs.models.Job.Status",
        "WebhookEventType": "jobs.models.WEBHOOK_EVENT_TYPES",
        "DeliveryState": "webhooks.models.Delivery.State",
    },
    "ENUM_GENERATE_CHOICE_DESCRIPTION": False,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "openapi.hooks.postprocess",
    ],
    "TAGS": [
        {"name": "Jobs", "description": "Submit, poll, list and cancel jobs."},
        {"name": "Job types", "description": "What can be submitted, with payload schemas."},
        {"name": "Results", "description": "Results kept by the job types that persist them."},
        {"name": "Webhooks", "description": "The events sent to a job's `callback_url`."},
        {"name": "Health", "description": "Unauthenticated checks for load balancers."},
        {"name": "Starter API", "description": "The starter's endpoints, kept for its clients."},
    ],
    "REDOC_UI_SETTINGS": {
        "expandResponses": "200,202",
        "hideDownloadButton": False,
        # System fonts: the page loads nothing from the internet (no web fonts).
        "theme": {
            "typography": {
                "fontFamily": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
                "headings": {"fontFamily": "system-ui, -apple-system, 'Segoe UI', sans-serif"},
                "code": {"fontFamily": "ui-monospace, 'DejaVu Sans Mono', monospace"},
            }
        },
    },
}

# --- HTTPS behind a TLS-terminating proxy --------------------------------------------------
# The proxy terminates TLS and says so in X-Forwarded-Proto (it must overwrite a client's value).
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Redirect plain-HTTP requests to HTTPS; off by default so `make run` serves http://127.0.0.1.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
# Orchestrators probe health over plain HTTP inside the network: never redirect those.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
# How long browsers must use HTTPS only (HSTS), in seconds; 0 sends no header.
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
# Whether HSTS also covers every subdomain.
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
# Whether HSTS consents to browsers' preload lists.
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
# Session and CSRF cookies (the admin) go over HTTPS only whenever HTTPS is enforced.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = SECURE_SSL_REDIRECT

# --- Cache (throttling) -------------------------------------------------------------------
# Rate-limit counters must be shared by every API process: Redis when configured.
CACHE_URL = env("CACHE_URL", default="")
if CACHE_URL:
    CACHES = {"default": env.cache("CACHE_URL")}
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(DATA_DIR / "cache"),
        }
    }

# --- Celery -------------------------------------------------------------------------------
_embedded_broker = not env("CELERY_BROKER_URL", default="")
# Where jobs and deliveries are queued; Redis (or RabbitMQ) in production.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="filesystem://localhost//")
# Celery's own result store. Jobs never need it (the Job row is the truth); set it only for tools.
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", default=None)
# Ignore task results unless a backend is configured: the Job row records outcomes.
CELERY_TASK_IGNORE_RESULT = CELERY_RESULT_BACKEND is None
# JSON only: pickle would let anyone who can write to the broker run code on the workers.
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
# Ack after the task ran, so a worker that dies mid-job leaves the message to be redelivered.
CELERY_TASK_ACKS_LATE = True
# ...and when the pool process is killed (OOM, SIGKILL), requeue instead of acking.
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# One message at a time per process: an hour-long job never holds other jobs hostage in prefetch.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Default time limits, in seconds; job types declare their own.
CELERY_TASK_SOFT_TIME_LIMIT = 300
CELERY_TASK_TIME_LIMIT = 330
# Publishing must not hang a request while the broker is down: fail fast, the sweeper retries.
CELERY_TASK_PUBLISH_RETRY = False
CELERY_BROKER_CONNECTION_TIMEOUT = env.float("CELERY_BROKER_CONNECTION_TIMEOUT", default=2.0)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Redeliver an unacked message only after the longest job could have finished (seconds).
# Shorter and Redis would hand a running hour-long job to a second worker.
CELERY_BROKER_VISIBILITY_TIMEOUT_SECONDS = env.int(
    "CELERY_BROKER_VISIBILITY_TIMEOUT_SECONDS", default=2 * 3600
)
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
    "visibility_timeout": CELERY_BROKER_VISIBILITY_TIMEOUT_SECONDS,
    "socket_connect_timeout": CELERY_BROKER_CONNECTION_TIMEOUT,
    "socket_timeout": 10,
    # Redis: look for expired unacked messages every 10 s (kombu's default scans only every 10th
    # 10 s tick, which left a killed worker's job waiting up to 100 s past the timeout).
    "unacked_restore_throttle": 1,
}
if CELERY_BROKER_URL.startswith("redis://"):
    # kombu's Redis transport, less a client object built per publish (core/broker.py).
    CELERY_BROKER_TRANSPORT = "core.broker:Transport"
if env("CELERY_BROKER_KEY_PREFIX", default=""):
    # Lets several test runs share one Redis without seeing each other's queues.
    CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] = env("CELERY_BROKER_KEY_PREFIX")
if _embedded_broker:
    _broker_dir = DATA_DIR / "broker"
    for _sub in ("queue", "processed"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "store_processed": False,
        "control_folder": str(_broker_dir / "control"),
    }
CELERY_TASK_DEFAULT_QUEUE = "jobs"
CELERY_TASK_ROUTES = {"webhooks.*": {"queue": "webhooks"}}
# Don't hijack the root logger: the worker logs as configured below.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Celery's Django fixup closes the database connection before and after every task unless
# this is set, so every task paid a new PostgreSQL connection (docs/benchmarks.md); with it the
# fixup leaves them open and core/celery.py applies Django's own policy (DB_CONN_MAX_AGE, the
# health check, closing a connection that saw an error) at each task, as for each request.
CELERY_DB_REUSE_MAX = 1_000_000
# Periodic tasks (celery beat).
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
# How often the sweeper publishes jobs that were accepted while the broker was down (seconds).
JOB_DISPATCH_SWEEP_SECONDS = env.float("JOB_DISPATCH_SWEEP_SECONDS", default=5.0)
# A job is swept only once it has stayed undispatched this long (seconds), so the sweeper
# never races the request that is publishing it right now.
JOB_DISPATCH_GRACE_SECONDS = env.float("JOB_DISPATCH_GRACE_SECONDS", default=2.0)
# How often the webhook dispatcher publishes delivery attempts that are due (seconds).
WEBHOOK_DISPATCH_SECONDS = env.float("WEBHOOK_DISPATCH_SECONDS", default=5.0)
# Retention, in days: finished jobs (with their idempotency keys), webhook events (with their
# deliveries and attempt log) and persisted results, which are kept longest.
JOB_RETENTION_DAYS = env.int("JOB_RETENTION_DAYS", default=30)
WEBHOOK_EVENT_RETENTION_DAYS = env.int("WEBHOOK_EVENT_RETENTION_DAYS", default=30)
JOB_RESULT_RETENTION_DAYS = env.int("JOB_RESULT_RETENTION_DAYS", default=365)
if min(JOB_RETENTION_DAYS, WEBHOOK_EVENT_RETENTION_DAYS) < 1:
    raise ImproperlyConfigured("JOB_RETENTION_DAYS and WEBHOOK_EVENT_RETENTION_DAYS must be >= 1.")
if JOB_RESULT_RETENTION_DAYS < JOB_RETENTION_DAYS:
    raise ImproperlyConfigured("JOB_RESULT_RETENTION_DAYS must be >= JOB_RETENTION_DAYS.")
# How often the housekeeping task prunes what is past its retention (seconds).
HOUSEKEEPING_INTERVAL_SECONDS = env.float("HOUSEKEEPING_INTERVAL_SECONDS", default=3600.0)
CELERY_BEAT_SCHEDULE = {
    "jobs-dispatch-sweep": {
        "task": "jobs.dispatch_sweep",
        "schedule": timedelta(seconds=JOB_DISPATCH_SWEEP_SECONDS),
    },
    "jobs-fail-abandoned": {
        "task": "jobs.fail_abandoned",
        "schedule": timedelta(seconds=JOB_DISPATCH_SWEEP_SECONDS),
    },
    "webhooks-dispatch-due": {
        "task": "webhooks.deliveries_dispatch_due",
        "schedule": timedelta(seconds=WEBHOOK_DISPATCH_SECONDS),
    },
    "jobs-prune": {
        "task": "jobs.prune",
        "schedule": timedelta(seconds=HOUSEKEEPING_INTERVAL_SECONDS),
    },
    "webhooks-prune": {
        "task": "webhooks.prune",
        "schedule": timedelta(seconds=HOUSEKEEPING_INTERVAL_SECONDS),
    },
}

# --- Webhooks -----------------------------------------------------------------------------
# Seconds to wait for a receiver to connect and to answer, per attempt.
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=15.0)
# Delay before each attempt, in seconds (comma-separated); its length is the number of attempts.
WEBHOOK_RETRY_SCHEDULE = [
    int(value)
    for value in env.list(
        "WEBHOOK_RETRY_SCHEDULE", default=["0", "5", "300", "1800", "7200", "18000", "36000", "36000"]
    )
]
if not WEBHOOK_RETRY_SCHEDULE or min(WEBHOOK_RETRY_SCHEDULE) < 0:
    raise ImproperlyConfigured("WEBHOOK_RETRY_SCHEDULE must list at least one delay >= 0 seconds.")
# Internal networks callback URLs may reach (comma-separated CIDRs); empty: public addresses only.
WEBHOOK_ALLOWED_NETWORKS = env.list("WEBHOOK_ALLOWED_NETWORKS", default=[])
try:
    for _network in WEBHOOK_ALLOWED_NETWORKS:
        ipaddress.ip_network(_network, strict=False)
except ValueError as _exc:
    raise ImproperlyConfigured(f"WEBHOOK_ALLOWED_NETWORKS: {_exc}") from None
# Longest Retry-After (seconds) a receiver's 429/503 can impose before the next attempt.
WEBHOOK_RETRY_AFTER_MAX_SECONDS = env.int("WEBHOOK_RETRY_AFTER_MAX_SECONDS", default=3600)
# After a secret rotation, how long (seconds) deliveries also carry the old secret's signature.
WEBHOOK_SECRET_OVERLAP_SECONDS = env.int("WEBHOOK_SECRET_OVERLAP_SECONDS", default=24 * 3600)

# --- OpenAI (the checklist job) ------------------------------------------------------------
# API key for the model provider; the checklist job is unavailable without it (or a base URL).
OPENAI_API_KEY = env("OPENAI_API_KEY", default="")
# Any OpenAI-compatible server (a gateway, a self-hosted model); empty means OpenAI itself.
OPENAI_BASE_URL = env("OPENAI_BASE_URL", default="")
# Model used for both checklist steps.
OPENAI_MODEL = env("OPENAI_MODEL", default="gpt-4o-mini")
# Timeout for one model request, in seconds.
OPENAI_TIMEOUT_SECONDS = env.float("OPENAI_TIMEOUT_SECONDS", default=60.0)
# Tries per model call, the first included, before a transient error (429, 5xx, timeout) fails the job.
OPENAI_MAX_ATTEMPTS = env.int("OPENAI_MAX_ATTEMPTS", default=4)
# First wait before retrying a model call, in seconds; it doubles each retry, with jitter.
OPENAI_RETRY_BASE_SECONDS = env.float("OPENAI_RETRY_BASE_SECONDS", default=1.0)
# Longest wait between two tries, in seconds; a longer Retry-After is clamped to it.
OPENAI_RETRY_MAX_SECONDS = env.float("OPENAI_RETRY_MAX_SECONDS", default=20.0)

# --- Logging ------------------------------------------------------------------------------
# Per-task INFO logging halves worker throughput: WARNING by default.
LOG_LEVEL = env("LOG_LEVEL", default="WARNING")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
}
