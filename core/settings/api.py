"""The API's edge: request limits, rate limits, DRF, and the OpenAPI docs' settings."""
from __future__ import annotations

import ipaddress

from django.core.exceptions import ImproperlyConfigured

from core.settings.base import env
from core.web_defaults import WEB_THREADS_DEFAULT

# Largest request body accepted, in bytes; larger ones get 413.
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=1024 * 1024, minimum=1)
DATA_UPLOAD_MAX_MEMORY_SIZE = API_MAX_BODY_BYTES
# Deepest JSON nesting accepted in a request body.
API_MAX_JSON_DEPTH = env.int("API_MAX_JSON_DEPTH", default=32, minimum=1)
# Requests per client per minute before 429, by scope (0 turns a scope's limit off): job
# submissions; reads (every GET); other writes (cancel); and the sensitive writes, kept tight
# (redeliver, signing-secret rotation).
API_SUBMIT_RATE_PER_MINUTE = env.int("API_SUBMIT_RATE_PER_MINUTE", default=6000, minimum=0)
API_READ_RATE_PER_MINUTE = env.int("API_READ_RATE_PER_MINUTE", default=6000, minimum=0)
API_WRITE_RATE_PER_MINUTE = env.int("API_WRITE_RATE_PER_MINUTE", default=600, minimum=0)
API_SENSITIVE_RATE_PER_MINUTE = env.int("API_SENSITIVE_RATE_PER_MINUTE", default=30, minimum=0)
# Most jobs in one batch submission (POST /api/jobs/batch/); each counts against the rates.
API_MAX_BATCH_SIZE = env.int("API_MAX_BATCH_SIZE", default=1000, minimum=1)
# How often (seconds) an API process shares the rate-limit counts it admitted on its own with
# the others, through Redis (core/ratelimit.py: a client may exceed a limit by at most 1 % of
# it per API process; near a limit every decision goes to Redis).
API_RATE_SYNC_SECONDS = env.float("API_RATE_SYNC_SECONDS", default=0.5, above=0)
# Failed admin logins per client address per minute before 429 (0: no limit).
ADMIN_LOGIN_RATE_PER_MINUTE = env.int("ADMIN_LOGIN_RATE_PER_MINUTE", default=10, minimum=0)
# Failed admin logins per username (any, existing or not) per hour, whatever the address, before
# 429; a browser that signed in as that user before is exempt (0: no limit).
ADMIN_LOGIN_FAILURES_PER_USERNAME_PER_HOUR = env.int("ADMIN_LOGIN_FAILURES_PER_USERNAME_PER_HOUR", default=20, minimum=0)
# Failed admin logins per minute, every address and username together, before 429 without a
# password hashed (each one checked costs about 0.25 s of CPU); a browser that signed in as the
# username before is exempt (0: no limit).
ADMIN_LOGIN_FAILURES_PER_MINUTE = env.int("ADMIN_LOGIN_FAILURES_PER_MINUTE", default=60, minimum=0)
# API requests with an unknown, revoked or malformed key per client address per minute; past it,
# the address's requests get 429 without their key looked up, unless the key already worked in
# that API process (0: no limit).
API_AUTH_FAILURE_RATE_PER_MINUTE = env.int("API_AUTH_FAILURE_RATE_PER_MINUTE", default=60, minimum=0)
# Most rows one admin action (cancel, redeliver, delete...) applies to; a larger selection, such
# as "select all" across a list's pages, is refused whole (0: no bound). Under Django's 1,000 form
# fields a request (DATA_UPLOAD_MAX_NUMBER_FIELDS): a deletion's confirmation posts a field a row.
ADMIN_ACTION_MAX_ROWS = env.int("ADMIN_ACTION_MAX_ROWS", default=500, minimum=0)
# Most jobs a client may have for the admin to delete it; a larger one is refused there with a
# message naming `manage.py client_delete`, which deletes it outside the web server. The deletion
# is one transaction over every row the client owns, its rows' keys read into the process (200,000
# jobs with their events, results and deliveries, 1.6 million rows: 26 to 38 s and 250 MB on a
# shared 2-core host): in the admin it held an API process's memory, and ran past a proxy's read
# timeout (a 504, the operator not told whether it happened), however large the client (0: no
# bound).
ADMIN_CLIENT_DELETE_MAX_JOBS = env.int("ADMIN_CLIENT_DELETE_MAX_JOBS", default=10_000, minimum=0)
# The proxies in front (addresses or networks, comma-separated; `*`: whichever peer connects):
# the one variable gunicorn reads too (gunicorn.conf.py). Only a request from one of them has
# its client's address read from X-Forwarded-For (the limits on failed admin logins and API key
# checks, core/throttling.py).
FORWARDED_ALLOW_IPS = env.list("FORWARDED_ALLOW_IPS", default=["127.0.0.1"])
try:
    for _proxy in FORWARDED_ALLOW_IPS:
        if _proxy != "*":
            ipaddress.ip_network(_proxy)
except ValueError as _exc:
    raise ImproperlyConfigured(f"FORWARDED_ALLOW_IPS: {_exc}") from None
# Bytes one client's persisted results (/api/results/) may hold; past it, jobs of types that
# persist their result are refused (429) until retention frees room (0: no quota).
JOB_RESULT_QUOTA_BYTES_PER_CLIENT = env.int("JOB_RESULT_QUOTA_BYTES_PER_CLIENT", default=1024**3, minimum=0)
# Bytes one client's stored jobs' payloads and metadata may hold (finished ones too, until
# JOB_RETENTION_DAYS prunes them); past it, its submissions are refused (429) (0: no quota).
JOB_PAYLOAD_QUOTA_BYTES_PER_CLIENT = env.int("JOB_PAYLOAD_QUOTA_BYTES_PER_CLIENT", default=1024**3, minimum=0)
# In list answers, a job's `payload` or `result` (a persisted result's `result`) whose JSON is
# larger than this many bytes is left out (null, named in the item's `omitted`).
API_LIST_INLINE_MAX_BYTES = env.int("API_LIST_INLINE_MAX_BYTES", default=4096, minimum=0)
# Unfinished (PENDING, STARTED, RETRY) jobs one client may have at once before 429 (0: no cap).
JOB_MAX_UNFINISHED_PER_CLIENT = env.int("JOB_MAX_UNFINISHED_PER_CLIENT", default=10_000, minimum=0)
# How long an Idempotency-Key is remembered, in seconds.
IDEMPOTENCY_KEY_TTL_SECONDS = env.int("IDEMPOTENCY_KEY_TTL_SECONDS", default=24 * 3600, minimum=1)
# Seconds a process trusts a key it has checked before asking the database again (0: every
# request); also how long a revoked key may still work in the other processes.
API_KEY_CACHE_SECONDS = env.float("API_KEY_CACHE_SECONDS", default=5.0, minimum=0)

# Longest `Prefer: wait=N` honoured, in seconds (a longer one, or a bare `wait`, waits this long).
API_MAX_WAIT_SECONDS = env.int("API_MAX_WAIT_SECONDS", default=60, minimum=0)
# Seconds between the `: heartbeat` comments of an idle event stream (keeps proxies from
# closing it, and finds clients that left without closing their connection).
API_STREAM_HEARTBEAT_SECONDS = env.float("API_STREAM_HEARTBEAT_SECONDS", default=15.0, above=0)
# Seconds an event stream's client may accept none of its bytes before the stream ends (it
# stopped reading, or its connection is gone), freeing its thread and its place; 0: never. Above
# the heartbeat, as documented (an idle stream's client is sent a byte each heartbeat only); a
# value at or below it was taken without a word.
API_STREAM_WRITE_TIMEOUT_SECONDS = env.float("API_STREAM_WRITE_TIMEOUT_SECONDS", default=30.0, minimum=0)
if 0 < API_STREAM_WRITE_TIMEOUT_SECONDS <= API_STREAM_HEARTBEAT_SECONDS:
    # An operator who raised only the heartbeat is told the value they never set is the default.
    raise ImproperlyConfigured(
        f"API_STREAM_WRITE_TIMEOUT_SECONDS must be 0 or > API_STREAM_HEARTBEAT_SECONDS "
        f"({API_STREAM_HEARTBEAT_SECONDS}), not {API_STREAM_WRITE_TIMEOUT_SECONDS}"
        + ("." if "API_STREAM_WRITE_TIMEOUT_SECONDS" in env.ENVIRON else " (its default): set it above the heartbeat.")
    )

# Waits and streams one API process holds at once; past it, a `Prefer: wait` answers at once
# (the preference not applied) and a stream gets 503, so some of its WEB_THREADS (gunicorn.conf.py,
# its default gunicorn's and scripts/web's: core/web_defaults.py) are always free for short requests.
API_MAX_WAITERS_PER_PROCESS = env.int(
    "API_MAX_WAITERS_PER_PROCESS",
    default=max(env.int("WEB_THREADS", default=WEB_THREADS_DEFAULT, minimum=1) - 10, 0), minimum=0,
)
# Of those, the most one client holds (a wait past it answers at once, a stream gets 429), so
# that one client's waits and streams leave room for everyone else's: a quarter by default.
API_MAX_WAITERS_PER_CLIENT = env.int("API_MAX_WAITERS_PER_CLIENT", default=API_MAX_WAITERS_PER_PROCESS // 4, minimum=0)
# Requests an API process runs at once (0: as many as it has threads, WEB_THREADS); the rest
# of its threads are for waits and streams, which give their turn back while they wait.
WEB_ACTIVE_REQUESTS = env.int("WEB_ACTIVE_REQUESTS", default=1, minimum=0)
# The most WEB_BODY_READ_SECONDS and WEB_HEADER_READ_SECONDS may be: an hour, past any client worth
# waiting for (0 is how to say no limit). Given no bound, a number past Python's socket timeouts
# (1e10 s) was taken, and every request whose headers or body came in more than one piece failed
# with an OverflowError (a 500, or its connection closed, and a traceback).
WEB_READ_MAX_SECONDS = 3600
# Seconds a request's body (declared by Content-Length, up to API_MAX_BODY_BYTES) may take to
# arrive in all: it is read before the request takes its turn, and one still incomplete then is
# answered 408 and its connection closed (core/request_body.py). 0: no limit, the body read
# when first asked for, inside the turn.
WEB_BODY_READ_SECONDS = env.float("WEB_BODY_READ_SECONDS", default=10.0, minimum=0, maximum=WEB_READ_MAX_SECONDS)
# Seconds a request's line and headers may take to arrive in all, from their first bytes, on a
# new connection and on a kept-alive one; past it the connection is closed unanswered
# (gunicorn_headers.py; gunicorn_worker.py hands it this setting). 0: no limit.
WEB_HEADER_READ_SECONDS = env.float("WEB_HEADER_READ_SECONDS", default=10.0, minimum=0, maximum=WEB_READ_MAX_SECONDS)
# Whether a process's database connections go with its request turns (core/concurrency.py)
# rather than with its threads. Off only where the process's own threads must see one
# connection: the test suite, whose in-process requests run inside the test's transaction.
WEB_TURN_CONNECTIONS = env.bool("WEB_TURN_CONNECTIONS", default=True)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["core.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["core.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.errors.exception_handler",
    # Every request of a client, in its scope's budget (core/throttling.py).
    "DEFAULT_THROTTLE_CLASSES": ["core.throttling.ClientRateThrottle"],
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
        {"name": "Limits", "description": "Your limits, and how close you are to them."},
        {"name": "Webhooks", "description": "The events sent to a job's `callback_url`."},
        {"name": "Webhook endpoints", "description": "URLs registered once to receive your jobs' events."},
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

