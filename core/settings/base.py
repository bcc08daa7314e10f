"""Django's own settings: paths, database, secrets, applications, HTTPS and cache; and the one
django-environ reader (`env`) the other settings modules use (logging: observability.py)."""
from __future__ import annotations

import builtins
import math
import secrets
from pathlib import Path
from typing import Any, TypeVar

import environ
from django.core.exceptions import ImproperlyConfigured

from core.dotenv import DotenvError, read_dotenv

BASE_DIR = Path(__file__).resolve().parent.parent.parent


class Env(environ.Env):
    """django-environ's reader, whose switches (env.bool) refuse a word that is neither on nor
    off. Its own takes any word but its six for "on" as off: `SECURE_SSL_REDIRECT=ture` turned
    the redirect off without a word. scripts/dotenv.sh's `switch_on` reads the scripts' switch
    (METRICS_ENABLED) with the same words."""

    BOOLEAN_FALSE_STRINGS = ("false", "off", "no", "n", "0", "")

    def bool(self, var: str, default: Any = environ.Env.NOTSET) -> bool:
        value = self.get_value(var, cast=str, default=default)
        if isinstance(value, bool):  # the default
            return value
        word = value.strip().lower()
        if word not in (*self.BOOLEAN_TRUE_STRINGS, *self.BOOLEAN_FALSE_STRINGS):
            raise ImproperlyConfigured(f"{var} must be true or false (or on/off, yes/no, 1/0), not {value!r}.")
        return word in self.BOOLEAN_TRUE_STRINGS

    # A number outside what its setting can work with (a negative limit, a period of 0) was taken
    # as it came: the service started, then refused every request, spun or never retried. Each
    # number's reader says the range it can run with, and a value outside it stops the start
    # naming the variable, as a misspelt switch does.
    def int(
        self, var: str, default: Any = environ.Env.NOTSET, *,
        minimum: builtins.int | None = None, maximum: builtins.int | None = None,
    ) -> builtins.int:
        return _in_range(var, self._number(super().int, var, default, "a whole number"), minimum, maximum)

    def float(
        self, var: str, default: Any = environ.Env.NOTSET, *, minimum: builtins.float | None = None,
        maximum: builtins.float | None = None, above: builtins.float | None = None,
    ) -> builtins.float:
        return _in_range(var, self._number(self._plain_float, var, default, "a number"), minimum, maximum, above)

    # django-environ's float reader drops every character but digits, commas, dots and minus
    # signs before it reads: `15s` was 15.0, `1e3` 13.0, `0x10` 10.0, `1 000` 1000.0. A number
    # is read as Python reads one, and only a finite one.
    def _plain_float(self, var: str, default: Any) -> builtins.float:
        value = builtins.float(self.get_value(var, cast=str, default=default))
        if not math.isfinite(value):
            raise ValueError(value)
        return value

    # A word where a number goes (`6k`, `nan`) was a ValueError that named the word, not the
    # variable: which of the service's fifty numbers it was had to be guessed.
    def _number(self, read: Any, var: str, default: Any, kind: str) -> Any:
        try:
            return read(var, default=default)
        except ValueError:
            raise ImproperlyConfigured(f"{var} must be {kind}, not {self.str(var)!r}.") from None


_Number = TypeVar("_Number", int, float)


def _in_range(var: str, value: _Number, minimum: _Number | None, maximum: _Number | None,
              above: _Number | None = None) -> _Number:
    if above is not None and not value > above:
        raise ImproperlyConfigured(f"{var} must be > {above}, not {value}.")
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{var} must be >= {minimum}, not {value}.")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{var} must be <= {maximum}, not {value}.")
    return value


env = Env()
# .env, where there is one, read as the scripts read it (core/dotenv.py): one that cannot be read
# stops the start with the reason, rather than leave the processes on the defaults.
_DOTENV = BASE_DIR / ".env"
try:
    read_dotenv(_DOTENV)
except DotenvError as exc:
    raise ImproperlyConfigured(f"Cannot read {_DOTENV}: {exc}.") from None

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
            "PORT": env.int("POSTGRES_PORT", default=5432, minimum=1, maximum=65535),
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
    # A new PostgreSQL connection costs ~20 ms: keep them. Django's check before every request
    # and task is off: core/connections.py checks one before reuse when it sat idle.
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=600, minimum=0)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = False
    # libpq waits for ever, by default, on a server that takes the connection and never answers
    # (one stuck in recovery, a failover's black hole), and so does the request or task holding
    # its process's turn; a DATABASE_URL's own `?connect_timeout=` wins.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env.int("DB_CONNECT_TIMEOUT", default=5, minimum=1)
    )
# Seconds an API request's statement may wait for a lock (PostgreSQL's lock_timeout) before it is
# given up and the request answered 503 `database_busy`; 0 waits for ever. A lock held on a table
# (a migration's ALTER TABLE, a LOCK TABLE, a TRUNCATE) otherwise kept every request touching it,
# each holding one of its process's threads, until the API answered nothing, /healthz included.
# The longest period a setting added to or taken from now may be: past year 9999 (or before year
# 1), where Python's datetimes end, the sum is an OverflowError wherever it is made.
CENTURY_SECONDS = 100 * 365 * 24 * 3600
# PostgreSQL's timeouts are int milliseconds: a longer one is refused by the server, and as a
# connection's option, refused every connection of the API's.
PG_TIMEOUT_MAX_SECONDS = 2_147_483
API_DB_LOCK_TIMEOUT_SECONDS = env.float(
    "API_DB_LOCK_TIMEOUT_SECONDS", default=5.0, minimum=0, maximum=PG_TIMEOUT_MAX_SECONDS
)
# Seconds an API request's statement may run (PostgreSQL's statement_timeout) before PostgreSQL
# ends it and the request answers 503 `database_busy`; 0 lets it run for ever. A read a client
# made large (a page of its many jobs' large payloads) held its thread and a backend as long as
# it ran (gunicorn's threaded workers cut no request at WEB_TIMEOUT_SECONDS), and went on running
# in PostgreSQL after its HTTP client had gone. By default 0 where API_DB_LOCK_TIMEOUT_SECONDS is 0: that
# is how an API behind PgBouncer, which refuses a connection that sends libpq's `options`, was
# told to send none; given 25 there, it sent them, and after the upgrade every request failed to
# connect.
API_DB_STATEMENT_TIMEOUT_SECONDS = env.float(
    "API_DB_STATEMENT_TIMEOUT_SECONDS", default=25.0 if API_DB_LOCK_TIMEOUT_SECONDS else 0.0, minimum=0,
    maximum=PG_TIMEOUT_MAX_SECONDS,
)
# Set by gunicorn.conf.py for the API's processes only: a worker's task, a migration (`manage.py
# migrate`) and other commands wait for their locks, and run their statements, as long as it takes.
if not EMBEDDED_DATABASE and env.bool("JOBAPI_WEB_PROCESS", default=False):
    # Set once as the connection opens (libpq's `options`), not per request: the hot paths pay no
    # statement for it. A `SET LOCAL` in a transaction still wins (the console's reads_bounded);
    # a DATABASE_URL's own `?options=-c lock_timeout=...` comes after, and wins too.
    _bounds = {"lock_timeout": API_DB_LOCK_TIMEOUT_SECONDS, "statement_timeout": API_DB_STATEMENT_TIMEOUT_SECONDS}
    _options = DATABASES["default"]["OPTIONS"]
    _bounded = " ".join(
        [f"-c {name}={max(1, round(seconds * 1000))}" for name, seconds in _bounds.items() if seconds]
        + [_options.get("options", "")]
    ).strip()
    if _bounded:
        _options["options"] = _bounded
# Seconds PostgreSQL has to answer a check of an open connection (`SELECT 1`: /readyz's, and a
# kept connection's after a pause) before the connection is cut and counted broken, rather than
# wait for ever on a frozen server or a stalled network (core/connections.py).
DB_CHECK_TIMEOUT_SECONDS = env.float("DB_CHECK_TIMEOUT_SECONDS", default=2.0, above=0)
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
# Previous values of SECRET_KEY (comma-separated), still accepted while a rotation of it goes
# through: Django's signatures, and the webhook signing secrets sealed under them until
# `manage.py signing_secrets_reencrypt` has sealed them again (docs/deployment.md).
SECRET_KEY_FALLBACKS = env.list("SECRET_KEY_FALLBACKS", default=[])

# --- Applications -------------------------------------------------------------------------
INSTALLED_APPS = [
    "core.apps.AdminConfig",  # django.contrib.admin, on the site in core/admin_site.py
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_object_actions",
    "core",
    "webhooks",
    "jobs",
    "console",
]

# Staff passwords (the admin and the console: `manage.py createsuperuser`, the admin's password
# forms): Django's usual four checks, the length raised to 12.
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# The admin's buttons on a job's and a delivery's page (cancel, redeliver) send a POST.
DJANGO_OBJECT_ACTIONS_DEFAULT_HTTP_METHOD = "POST"

MIDDLEWARE = [
    # First, so its request id, timing and route cover every answer, the other middleware's too,
    # and the time a request waited for its turn (below): what its client waited. Inside the
    # turn, a process's one turn (the default) queued requests for seconds that its log line
    # and the latency histogram never showed. It needs no database connection.
    "core.request_context.RequestContextMiddleware",
    # Outside the rest, so that every answer to HEAD goes without its body, theirs too.
    "core.middleware.HeadWithoutBodyMiddleware",
    # A process runs WEB_ACTIVE_REQUESTS requests at once, however many threads wait.
    "core.concurrency.ActiveRequestsMiddleware",
    "core.middleware.BodySizeLimitMiddleware",
    "core.middleware.UrlGuardMiddleware",
    "core.middleware.UuidPathMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Sessions and CSRF run on every path: each costs little when the API does not use it, and
    # `check --deploy` looks for these exact classes (security.W003, security.W012).
    "django.contrib.sessions.middleware.SessionMiddleware",
    # Django's, a body's request to a path without its trailing slash redirected with 308.
    "core.middleware.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    # Django users and messages serve the admin only: skipped for every other path.
    "core.middleware.AdminAuthenticationMiddleware",
    "core.middleware.AdminMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # The admin's and the console's pages run no script but the service's own files.
    "core.csp.ContentSecurityPolicyMiddleware",
    # The RateLimit fields the API's rate limit left on its request (core/throttling.py).
    "core.throttling.RateLimitFieldsMiddleware",
    # Only its process_exception: a page's view that met the database out of reach, or a full
    # disk, answers 503.
    "core.middleware.OutageMiddleware",
]

ROOT_URLCONF = "core.urls"
WSGI_APPLICATION = "core.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # core/templates: the admin's templates the project overrides, found before the admin
        # app's own (an app's, core's included, would come after it: it is the first app).
        "DIRS": [BASE_DIR / "openapi" / "templates", BASE_DIR / "core" / "templates"],
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

# --- HTTPS behind a TLS-terminating proxy --------------------------------------------------
# The proxy terminates TLS and says so in X-Forwarded-Proto (it must overwrite a client's value).
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Redirect plain-HTTP requests to HTTPS; off by default so `make run` serves http://127.0.0.1.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
# Orchestrators probe health, and Prometheus scrapes metrics, over plain HTTP inside the
# network: never redirect those.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
# How long browsers must use HTTPS only (HSTS), in seconds; 0 sends no header.
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0, minimum=0)
# Whether HSTS also covers every subdomain.
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
# Whether HSTS consents to browsers' preload lists.
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
# The admin's session and CSRF cookies go over HTTPS only whenever DEBUG is off, whatever
# SECURE_SSL_REDIRECT says (a proxy may redirect instead of Django). Browsers treat
# http://127.0.0.1 and http://localhost as secure, so `make run`'s admin still works there;
# any other plain-HTTP address needs DEBUG on (README, "Environment").
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = not DEBUG
# A staff session (the admin, the console) lasts ADMIN_SESSION_SECONDS from its sign-in, not
# Django's two weeks, and its cookie goes when the browser closes: a session left open on a
# shared machine, or a cookie taken from it, stops working by the end of the day. The cookie
# stays HttpOnly and SameSite=Lax (Django's defaults).
# At most a year: a staff session is to end, and Django's session expiry (now plus this) is past
# year 9999 from about 2.5 * 10^11 s, an OverflowError at every sign-in.
SESSION_COOKIE_AGE = env.int("ADMIN_SESSION_SECONDS", default=12 * 3600, minimum=1, maximum=365 * 24 * 3600)
SESSION_EXPIRE_AT_BROWSER_CLOSE = env.bool("ADMIN_SESSION_EXPIRE_AT_BROWSER_CLOSE", default=True)
# A form post refused by CSRF: Django's page, styled by the admin's stylesheet rather than an
# inline <style> the Content-Security-Policy blocks.
CSRF_FAILURE_VIEW = "core.csrf_failure.csrf_failure"

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
