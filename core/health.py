"""Health checks for load balancers and orchestrators; unauthenticated by design."""
from __future__ import annotations

import logging

from django.db import connection
from django.http import HttpRequest, JsonResponse

from core.celery import app
from core.concurrency import turn_released
from core.errors import error_body

logger = logging.getLogger(__name__)


def healthz(request: HttpRequest) -> JsonResponse:
    """The process is alive and serving requests."""
    return JsonResponse({"status": "ok"})


def unreachable() -> list[str]:
    """Which of /readyz's checks fail, of "database" and "broker" (/metrics reports the same
    as jobapi_ready)."""
    failed = []
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:  # any driver error means "not ready"
        logger.warning("readyz: database unreachable", exc_info=True)
        failed.append("database")
    try:
        # A broker that hangs rather than refuses takes seconds to time out (its connect timeout,
        # socket_timeout, a retry): the request's turn goes to the process's other requests
        # meanwhile (core/concurrency.py), or every probe, scrape and console refresh stalled
        # every request of its process (one turn each by default) for as long.
        with turn_released(), app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception:  # any transport error means "not ready"
        logger.warning("readyz: broker unreachable", exc_info=True)
        failed.append("broker")
    return failed


def readyz(request: HttpRequest) -> JsonResponse:
    """The database and the broker are reachable; 503 naming whichever is not."""
    failed = unreachable()
    if failed:
        return JsonResponse(
            error_body("not_ready", f"Unreachable: {', '.join(failed)}.", {"failed": failed}), status=503
        )
    return JsonResponse({"status": "ok", "checks": {"database": "ok", "broker": "ok"}})
