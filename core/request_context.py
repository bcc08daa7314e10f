"""Each request's id and context: X-Request-ID in and out, the log context of everything the
request does (and of the tasks it publishes: core/logs.py), its metrics, and one log line.

The id is the caller's X-Request-ID when it is well-formed (a proxy's or a client's trace id, so
one id follows a request across services), else a new one; either way the answer carries it.
"""
from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

from core import logs, metrics

REQUEST_ID_HEADER = "X-Request-ID"
# Letters, digits and -_.:=+/@, 8 to 200 of them: UUIDs, hex and base64 trace ids, a load
# balancer's "Root=1-…". Anything else (a line break, a megabyte) is replaced, never logged.
WELL_FORMED_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:=+/@-]{7,199}")
# The route label of a request no URL pattern matched (404s, and answers given before routing).
UNMATCHED_ROUTE = "(unmatched)"

log = logs.get_logger("core.requests")


def request_id_of(request: HttpRequest) -> str:
    given = request.META.get("HTTP_X_REQUEST_ID", "")
    if given and WELL_FORMED_REQUEST_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


class RequestContextMiddleware:
    """The outermost middleware: times and labels every answer, the other middleware's too,
    from before the request waits for its turn (core/concurrency.py)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if iscoroutinefunction(self):
            return self._acall(request)
        started = self._begin(request)
        response = self.get_response(request)
        return self._end(request, response, started)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        started = self._begin(request)
        response = await self.get_response(request)
        return self._end(request, response, started)

    def _begin(self, request: HttpRequest) -> float:
        request.request_id = request_id_of(request)  # type: ignore[attr-defined]
        logs.clear()
        logs.bind(request_id=request.request_id)  # type: ignore[attr-defined]
        return time.perf_counter()

    def _end(self, request: HttpRequest, response: HttpResponse, started: float) -> HttpResponse:
        seconds = time.perf_counter() - started
        response[REQUEST_ID_HEADER] = request.request_id  # type: ignore[attr-defined]
        match = request.resolver_match
        route = match.route if match is not None else UNMATCHED_ROUTE
        metrics.http_answered(route=route, method=request.method or "", status=response.status_code, seconds=seconds)
        log.info("request", method=request.method, route=route, status=response.status_code,
                 duration_ms=round(seconds * 1000, 2))
        logs.clear()
        return response
