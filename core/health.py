"""Health checks for load balancers and orchestrators; unauthenticated by design.

Anyone may ask /readyz, as often as they like (a fleet of probes, a scraper): its checks run at
most once per READYZ_CHECK_SECONDS in a process, by the request that finds the last outcome too
old, and a request arriving while they run waits for their outcome, holding no request turn,
instead of running its own. So a process makes one round trip per dependency a window however
many ask, and a dependency that hangs costs one connection waiting on it, not one per request.
"""
from __future__ import annotations

import logging
import tempfile
import threading
import time

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

from core.celery import app, broker_connection_ensure
from core.concurrency import turn_released
from core.connections import hung_up_after
from core.errors import error_body
from core.log_database_errors import first_line

logger = logging.getLogger(__name__)

def healthz(request: HttpRequest) -> JsonResponse:
    """The process is alive and serving requests."""
    return JsonResponse({"status": "ok"})


def _database_answers() -> bool:
    try:
        connection.ensure_connection()  # within its connect timeout (DB_CONNECT_TIMEOUT)
        with hung_up_after(connection, settings.DB_CHECK_TIMEOUT_SECONDS), connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 (any driver error means "not ready")
        # One line, not a traceback: it repeats every READYZ_CHECK_SECONDS while the outage lasts.
        logger.warning("readyz: database unreachable: %s", first_line(exc))
        return False
    return True


def _broker_answers() -> bool:
    try:
        # A broker that hangs rather than refuses takes seconds to time out (its connect timeout,
        # socket_timeout, a retry): the request's turn goes to the process's other requests
        # meanwhile (core/concurrency.py), or every probe, scrape and console refresh stalled
        # every request of its process (one turn each by default) for as long. The check stays
        # within the connect and socket timeouts that _check_wait_seconds counts.
        with turn_released(), app.connection_for_write() as conn:
            broker_connection_ensure(conn)
    except Exception as exc:  # noqa: BLE001 (any transport error means "not ready")
        logger.warning("readyz: broker unreachable: %s", first_line(exc))
        return False
    return True


# Bytes the storage check writes: a page, as a write of the SQLite file or the cache needs one.
STORAGE_PROBE_BYTES = 4096


def _storage_writable() -> bool:
    """DATA_DIR takes a write (an unnamed file, gone when closed). With its disk full SQLite
    still reads, so the database check passed while every submission failed."""
    try:
        with tempfile.TemporaryFile(dir=settings.DATA_DIR, buffering=0) as probe:
            probe.write(bytes(STORAGE_PROBE_BYTES))
    except OSError as exc:
        logger.warning("readyz: storage not writable: %s", first_line(exc))
        return False
    return True


CHECKS = {"database": _database_answers, "broker": _broker_answers}
if settings.EMBEDDED_DATABASE:
    # Embedded mode writes its database, cache and broker's messages in DATA_DIR.
    CHECKS["storage"] = _storage_writable


def _check_wait_seconds() -> float:
    """Longest a request waits for the checks another request runs: about as long as they may
    take against dependencies that take connections and never answer, each to its own bounds
    (PostgreSQL's connect timeout then DB_CHECK_TIMEOUT_SECONDS; the broker's connect and
    socket timeouts). A check still running then waits on a dependency that overran its bound."""
    database = settings.DATABASES["default"].get("OPTIONS", {})
    broker = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    bounds = (database.get("connect_timeout", 0), settings.DB_CHECK_TIMEOUT_SECONDS,
              broker.get("socket_connect_timeout", 0), broker.get("socket_timeout", 0))
    return sum(float(bound) for bound in bounds)


class _SharedCheck:
    """The checks' outcome, shared by a process's requests: one request checks at a time, and
    the others take its outcome (a failure too) until it is READYZ_CHECK_SECONDS old."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        # The dependency the running check waits on (None: no check runs).
        self._checking: str | None = None
        # The last check's: when it ended (time.monotonic()), and what failed.
        self._outcome: tuple[float, list[str]] | None = None

    def failed(self, window: float) -> list[str]:
        waited_until = time.monotonic() + _check_wait_seconds()
        while True:
            with self._condition:
                if self._outcome is not None and time.monotonic() - self._outcome[0] < window:
                    return list(self._outcome[1])
                if self._checking is None:
                    self._checking = next(iter(CHECKS))  # this request checks
                    break
                last = self._outcome
            awaited = self._awaited(last, waited_until)
            if awaited is not None:
                return awaited
        return self._run()

    def _awaited(self, last: tuple[float, list[str]] | None, until: float) -> list[str] | None:
        """The outcome of the check another request runs (newer than `last`), waited for until
        `until` (time.monotonic()); None if that check raised. Waiting holds no request turn:
        the check may need one back (core/concurrency.py)."""
        with turn_released(), self._condition:
            self._condition.wait_for(lambda: self._checking is None, timeout=until - time.monotonic())
            if self._checking is not None:  # it overran its time on this dependency: not ready
                return [self._checking]
            outcome = self._outcome
            return None if outcome is None or outcome is last else list(outcome[1])

    def _run(self) -> list[str]:
        failed: list[str] = []
        try:
            for name, answers in CHECKS.items():
                with self._condition:
                    self._checking = name
                if not answers():
                    failed.append(name)
            with self._condition:
                self._outcome = (time.monotonic(), failed)
        finally:
            # Even when a check raised: the next request checks, rather than waiting on no one.
            with self._condition:
                self._checking = None
                self._condition.notify_all()
        return list(failed)


_shared = _SharedCheck()


def unreachable() -> list[str]:
    """Which of /readyz's checks fail, of "database", "broker" and, in embedded mode, "storage"
    (/metrics reports the same as jobapi_ready, and the console): within READYZ_CHECK_SECONDS,
    the last check's outcome."""
    if not settings.READYZ_CHECK_SECONDS:
        return [name for name, answers in CHECKS.items() if not answers()]
    return _shared.failed(settings.READYZ_CHECK_SECONDS)


def readyz(request: HttpRequest) -> JsonResponse:
    """The database and the broker are reachable (and, in embedded mode, DATA_DIR writable);
    503 naming whichever is not."""
    failed = unreachable()
    if failed:
        return JsonResponse(
            error_body("not_ready", f"Unreachable: {', '.join(failed)}.", {"failed": failed}), status=503
        )
    return JsonResponse({"status": "ok", "checks": dict.fromkeys(CHECKS, "ok")})
