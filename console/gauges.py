"""The figures GET /metrics reads from the database and the broker when it is scraped, so they
hold across restarts and whichever process serves them: jobs by status, the oldest pending job,
the queues, their consumers, webhook deliveries pending, receivers failing, endpoints disabled
and the deliveries they hold, and readiness.

Only the API serves these (several API processes or hosts serve the same figures: aggregate
them with max, not sum); each process group serves its own counters (core/metrics.py). The
counts whose cost grows with what they count (jobs by status, the deliveries pending, held and
failing) are each made at most once in 15 s by a process (console/counted.py).
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from console import disabled_endpoints, receivers, selectors
from console.counted import Counted
from core import metrics
from core.db import timed_out
from core.health import unreachable
from core.log_database_errors import first_line
from jobs.models import Job
from jobs.registry import job_types_all
from jobs.telemetry import MODEL_BUDGET_CHECKS
from jobs.types.checklist_failures import CALL_OUTCOMES
from webhooks.models import Delivery
from webhooks.telemetry import DISABLED_REASONS, OUTCOMES

logger = logging.getLogger(__name__)


def series_prepare() -> None:
    """This process's counters and histograms, every job type's, outcome's, reason's and periodic
    task's, and the model's (OPENAI_MODEL), at zero."""
    metrics.prepare(job_names=[t.name for t in job_types_all()], final_statuses=sorted(Job.FINAL_STATUSES),
                    outcomes=OUTCOMES, disabled_reasons=DISABLED_REASONS,
                    periodic_tasks=sorted(metrics.periodic_tasks()), model=settings.OPENAI_MODEL,
                    model_outcomes=CALL_OUTCOMES, budget_checks=MODEL_BUDGET_CHECKS)


def _pending_count(*, now: datetime) -> int:
    return Delivery.objects.filter(state=Delivery.State.PENDING).count()


# Every delivery_due entry is read: 3-8 ms at 45,000 pending, ten times that at a tenfold backlog
# (a receiver down for hours), on each scrape of each API process (console/counted.py).
_pending_counted = Counted(_pending_count)


def _gauge(name: str, documentation: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=labels)


@dataclass(frozen=True)
class _DatabaseFigures:
    """The gauges read from the database, and the workers seen (the queues' consumers)."""

    gauges: list[Metric]
    workers: list[selectors.WorkerRow]


class OperatorGauges(Collector):
    def collect(self) -> Iterator[Metric]:
        failed = unreachable()
        ready = _gauge("jobapi_ready", "1 when the database and the broker answer (what /readyz checks).")
        ready.add_metric([], 0 if failed else 1)
        yield ready
        if "database" not in failed:
            now = timezone.now()
            figures: _DatabaseFigures | None = None
            try:
                # Read whole before any is served: given up halfway, the scrape has none of them
                # rather than some from a transaction that failed.
                with selectors.operator_reads_bounded():
                    figures = self._database(now=now)
            except DatabaseError as exc:
                if not timed_out(exc):
                    logger.warning("/metrics: the database figures are left out", exc_info=True)
                    return
                # One line, not a traceback: it comes back every scrape while the lock is held.
                logger.warning("/metrics: the database figures are left out: not read within "
                               "OPERATOR_READ_TIMEOUT_SECONDS (%s)", first_line(exc))
            if figures is not None:
                yield from figures.gauges
            # The broker's figures after, out of the reads' transaction: its call gives the
            # request's turn away, and the turn's database connection with it (core/concurrency.py).
            # Its messages are served with a table locked too: the broker answers, and they are
            # what an operator watches during a migration (left out with the database's, the
            # dashboard's queues went blank for as long as it held its lock).
            yield from self._queues(None if figures is None else figures.workers, broker_up="broker" not in failed)

    def _database(self, *, now: datetime) -> _DatabaseFigures:
        counts = selectors.jobs_by_type_and_status(now=now).value
        jobs = _gauge("jobapi_jobs", "Jobs in each status: not final now, or finished in the last hour.", ["status"])
        for status, count in selectors.jobs_by_status(counts).items():
            jobs.add_metric([status], count)
        unknown = _gauge("jobapi_jobs_of_unknown_types",
                         "Unfinished jobs of job types this code does not register (removed or renamed by a "
                         "deploy; which ones: manage.py jobs_fail_unknown_types).")
        unknown.add_metric([], selectors.unfinished_of_unknown_types(counts))
        oldest = _gauge("jobapi_oldest_pending_job_age_seconds",
                        "How long the job waiting longest to start has waited since it fell due (0: none waits).")
        oldest.add_metric([], selectors.oldest_pending_age_seconds(now=now))
        pending = _gauge("jobapi_webhook_pending_deliveries", "Webhook deliveries not yet delivered nor given up on.")
        pending.add_metric([], _pending_counted.read(now=now).value)
        failing = _gauge("jobapi_webhook_failing_receivers",
                         "Receivers (callback hosts) with deliveries retrying after a failure, or given up on "
                         "in the last hour (which ones: /console/).")
        failing.add_metric([], receivers.receivers_failing_count(now=now))
        totals = disabled_endpoints.disabled_totals()
        disabled = _gauge("jobapi_webhook_disabled_endpoints",
                          "Webhook endpoints disabled now, by reason (failing: by the service; client: by their "
                          "client; which ones: /console/).", ["reason"])
        for row in totals.by_reason:
            disabled.add_metric([row.reason], row.endpoints)
        held = _gauge("jobapi_webhook_held_deliveries",
                      "Webhook deliveries held behind disabled endpoints, sent when they are enabled again.")
        held.add_metric([], totals.held)
        return _DatabaseFigures([jobs, unknown, oldest, pending, failing, disabled, held], selectors.workers_seen())

    def _queues(self, workers: list[selectors.WorkerRow] | None, *, broker_up: bool) -> Iterator[Metric]:
        """The queues' messages, and their consumers unless `workers` is None (the heartbeats not
        read): a consumer count of 0 for want of them would fire the "no consumer" alert."""
        messages = _gauge("jobapi_queue_messages", "Messages waiting in each broker queue.", ["queue"])
        consumers = _gauge("jobapi_queue_consumers", "Workers up that consume each queue (heartbeats, sent while a worker's consumer runs).", ["queue"])
        for row in selectors.queues(workers=workers or [], broker_up=broker_up):
            if row.messages is not None:
                messages.add_metric([row.name], row.messages)
            consumers.add_metric([row.name], row.consumers)
        yield messages
        if workers is not None:
            yield consumers
