"""What operators read: logs (level, format), readiness (/readyz) and Prometheus metrics (on or
off, the token, the workers' port). docs/deployment.md, "Monitoring", says how they are scraped."""
from __future__ import annotations

import logging

from django.core.exceptions import ImproperlyConfigured

from core import logs
from core.settings.base import PG_TIMEOUT_MAX_SECONDS, env

# Log level of the API, the workers and beat. Below INFO a job's transitions and a delivery's
# attempts are not logged, and cost nothing (docs/benchmarks.md, "What INFO costs").
LOG_LEVEL = env("LOG_LEVEL", default="WARNING").upper()
if LOG_LEVEL not in logging.getLevelNamesMapping():  # WARN and FATAL too, as Celery's --loglevel takes them
    raise ImproperlyConfigured("LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL.")
# "json": one JSON object a line (timestamp, level, logger, message and the context); "text".
LOG_FORMAT = env("LOG_FORMAT", default="text")
if LOG_FORMAT not in ("json", "text"):
    raise ImproperlyConfigured("LOG_FORMAT must be json or text.")
LOGGING = logs.logging_config(level=LOG_LEVEL, json=LOG_FORMAT == "json")
logs.configure(level=LOG_LEVEL)

# Seconds an API process reuses the outcome of its readiness checks (database, broker), a
# failure too, for /readyz, /metrics and the console, however many ask (core/health.py); 0:
# every request checks.
READYZ_CHECK_SECONDS = env.float("READYZ_CHECK_SECONDS", default=1.0, minimum=0)

# Seconds each database read of the console's and /metrics' may run before PostgreSQL ends it
# (statement_timeout): the console then answers 503 database_busy and /metrics leaves its
# database figures out, rather than holding the process's request turn for as long as a lock
# or a huge table makes them wait (docs/reliability.md, "The operators' reads").
OPERATOR_READ_TIMEOUT_SECONDS = env.float(
    "OPERATOR_READ_TIMEOUT_SECONDS", default=5.0, above=0, maximum=PG_TIMEOUT_MAX_SECONDS
)

# Serve GET /metrics (Prometheus) and count jobs, deliveries and requests; off by default.
METRICS_ENABLED = env.bool("METRICS_ENABLED", default=False)
# The Bearer token GET /metrics requires on the API's port; required when metrics are on.
METRICS_TOKEN = env("METRICS_TOKEN", default="")
if METRICS_ENABLED and not METRICS_TOKEN:
    raise ImproperlyConfigured("METRICS_ENABLED needs METRICS_TOKEN (the Bearer token of GET /metrics).")
# Port on which each Celery worker serves its own /metrics, without a token: keep it internal
# (compose publishes none of them); 0: none.
METRICS_PORT = env.int("METRICS_PORT", default=0, minimum=0, maximum=65535)
# Address that port listens on (the image's workers: every interface of their container).
METRICS_ADDRESS = env("METRICS_ADDRESS", default="127.0.0.1")
