"""The console page (staff, through the admin's login) and GET /metrics (Prometheus)."""
from __future__ import annotations

import hmac
import logging
from typing import Any

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.log import log_response
from django.views.decorators.cache import never_cache
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from console import counted as counted_module
from console import disabled_endpoints, receivers, selectors
from console.gauges import OperatorGauges
from core import metrics
from core.db import timed_out
from core.errors import error_body, handler404
from core.health import unreachable
from core.log_database_errors import first_line
from core.outage_page import outage_answer
from jobs.registry import job_type_known, job_types_all

logger = logging.getLogger(__name__)

# How often the page refreshes its figures, in seconds.
REFRESH_SECONDS = 5
# Marks an answer as the page's own fragment (a login page, after a session expired, is not).
FRAGMENT_HEADER = "X-Console-Fragment"
# The page shows every client's jobs (their errors) and deliveries (receivers and their answers):
# what the admin shows only to a staff user who may view jobs and deliveries.
VIEW_PERMISSIONS = ("jobs.view_job", "webhooks.view_delivery")


def _busy(request: HttpRequest, exc: DatabaseError) -> HttpResponse:
    """503 for the console's reads given up (selectors.operator_reads_bounded): the page keeps its
    last figures, marked stale with this message, and refreshes again; the page opened in a
    browser says it as a page."""
    response = outage_answer(
        request, code="database_busy", retry_after=REFRESH_SECONDS,
        message=f"The console's figures could not be read within {settings.OPERATOR_READ_TIMEOUT_SECONDS:g} s "
        "(OPERATOR_READ_TIMEOUT_SECONDS): a table they read is locked (a migration, a LOCK TABLE, a "
        "TRUNCATE) or too large to read in time; retry later.",
    )
    log_response("GET /console/: its reads were given up (%s); answered 503", first_line(exc),
                 response=response, request=request, logger=logger, level="warning")
    return response


def _job_types(counts: dict[tuple[str, str], int], failures: selectors.Failures) -> list[dict[str, Any]]:
    names = sorted({t.name for t in job_types_all()} | {name for name, _ in counts})
    rows = []
    for name in names:
        finished, failed = failures.by_type.get(name, (0, 0))
        rows.append({
            "name": name,
            "known": job_type_known(name),
            "counts": [counts.get((name, status), 0) for status in selectors.STATUSES],
            "failure_rate": failed / finished if finished else None,
        })
    return rows


def _overview() -> dict[str, Any]:
    now = timezone.now()
    # The readiness checks and the queues' depths ask the broker without the request's turn,
    # and the turn's database connection goes with it (core/concurrency.py): outside the
    # bounded reads' transaction, which would lose its connection (closed) and its bounds.
    down = unreachable()
    with selectors.operator_reads_bounded():
        counted = selectors.jobs_by_type_and_status(now=now)
        counts = counted.value
        failures = selectors.failures(now=now, counts=counts)
        workers = selectors.workers_seen()
        disabled = disabled_endpoints.disabled_overview()
        oldest_pending = selectors.jobs_oldest_pending(now=now)
        longest_running = selectors.jobs_longest_running()
        failing_receivers = receivers.receivers_failing(now=now)
    return {
        "now": now,
        "refresh_seconds": REFRESH_SECONDS,
        "unreachable": down,
        "statuses": selectors.STATUSES,
        # The counts may be older than the page (console/counted.py): it says when they were made.
        "jobs_counted_at": counted.at,
        "counted_for_seconds": counted_module.COUNTED_FOR_SECONDS,
        "job_types": _job_types(counts, failures),
        "unfinished_of_unknown_types": selectors.unfinished_of_unknown_types(counts),
        "totals": [sum(count for (_, s), count in counts.items() if s == status) for status in selectors.STATUSES],
        "oldest_pending": oldest_pending,
        "longest_running": longest_running,
        "queues": selectors.queues(workers=workers, broker_up="broker" not in down),
        "failures": failures,
        "receivers": failing_receivers,
        "disabled": disabled.totals,
        "disabled_endpoints": disabled.top,
        "workers": workers,
    }


@never_cache
@staff_member_required
def console(request: HttpRequest) -> HttpResponse:
    """The whole page; with ?fragment=1, its figures alone (what the page fetches to refresh)."""
    if not request.user.has_perms(VIEW_PERMISSIONS):
        raise PermissionDenied
    fragment = bool(request.GET.get("fragment"))
    try:
        overview = _overview()
    except DatabaseError as exc:
        if not timed_out(exc):
            raise  # the database out of reach is everyone's 503 (core/errors.py), any other a 500
        return _busy(request, exc)
    response = render(request, "console/_figures.html" if fragment else "console/index.html", overview)
    if fragment:
        response[FRAGMENT_HEADER] = "1"
    return response


@never_cache
def metrics_view(request: HttpRequest) -> HttpResponse:
    """The Prometheus text format, behind `Authorization: Bearer <METRICS_TOKEN>`; 404 while
    METRICS_ENABLED is off, as if there were no such page."""
    if not settings.METRICS_ENABLED:
        return handler404(request)
    scheme, _, token = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.METRICS_TOKEN.encode()):
        response = JsonResponse(
            error_body("not_authenticated", "Send the metrics token as 'Authorization: Bearer <token>'."), status=401
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    registry = metrics.registry([OperatorGauges()])
    if registry is None:
        # A KeyError's 500 said nothing of the cause; nor would settings refusing to load, which
        # every management command (started without the directory) loads too.
        response = JsonResponse(error_body(
            "metrics_unavailable",
            "Metrics are on, but this API process was started without PROMETHEUS_MULTIPROC_DIR "
            "(not through scripts/web): it has no metrics to serve.",
        ), status=503)
        # The one line for it: log_response (Django's own, for the answers its views make) marks
        # the response logged, so django.request adds no "Service Unavailable: /metrics" beside it.
        log_response("GET /metrics: this API process has no %s (started without scripts/web); answered 503",
                     metrics.MULTIPROC_DIR_VARIABLE, response=response, request=request, logger=logger)
        return response
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
