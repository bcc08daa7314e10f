"""Prometheus metrics (prometheus-client in multiprocess mode): the counters and histograms the
processes record as things happen, and how a process group serves them.

Every process of a group (gunicorn's workers, a Celery worker's pool) writes its own files in
the group's PROMETHEUS_MULTIPROC_DIR, which scripts/web and scripts/worker choose and empty at
start; whoever serves the group reads them all (MultiProcessCollector): the API's GET /metrics,
and each Celery worker's own port (METRICS_PORT). Figures read from the database at scrape time
(jobs by status, the oldest pending job) are the console app's (console/gauges.py).

Labels never hold a client, a URL or an id: a series per client or per receiver would grow
without bound (the console shows those). Recording costs a few microseconds (a lock and a write
to a memory-mapped file); with METRICS_ENABLED off, or in a process started without the
directory (a management command), it is a function call that returns.
"""
from __future__ import annotations

import fcntl
import functools
import logging
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from celery import current_task, states
from django.conf import settings
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# Seconds: from a few milliseconds (a hello-world job, an API call) to an hour (a long job).
_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# Seconds a model takes to answer: a short completion to a long one near the client's timeout.
_MODEL_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 90, 120)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

JOBS_SUBMITTED = Counter("jobapi_jobs_submitted", "Jobs accepted.", ["job_name"])
JOBS_FINISHED = Counter("jobapi_jobs_finished", "Jobs that reached a final status.", ["job_name", "status"])
JOB_QUEUE_WAIT = Histogram(
    "jobapi_job_queue_wait_seconds", "From when a job was due (submitted, or its run_at) to its start.",
    ["job_name"], buckets=_SECONDS_BUCKETS,
)
JOB_RUN = Histogram(
    "jobapi_job_run_seconds", "From a job's start to its final status.", ["job_name"], buckets=_SECONDS_BUCKETS
)
WEBHOOK_ATTEMPTS = Counter("jobapi_webhook_attempts", "Webhook delivery attempts, by outcome.", ["outcome"])
WEBHOOK_DELIVERY = Histogram(
    "jobapi_webhook_delivery_seconds", "From a webhook event to its delivery's first success.",
    buckets=_SECONDS_BUCKETS,
)
WEBHOOK_ENDPOINTS_DISABLED = Counter(
    "jobapi_webhook_endpoints_disabled", "Webhook endpoints the service disabled, by reason.", ["reason"]
)
PERIODIC_TASK_RUNS = Counter(
    "jobapi_periodic_task_runs", "Periodic tasks (beat's schedule) that ran to their end, by task.", ["task"]
)
PERIODIC_TASK_FAILURES = Counter(
    "jobapi_periodic_task_failures",
    "Periodic task runs that ended in an exception, or acted on some of their rows that raised, by task.", ["task"],
)
# Gauges, each process's in a file of its own: "max" serves the largest of the group's (a dead
# process's too, whose file stays), the latest time. Set only in the worker that consumes the
# periodic tasks' queue: not in the API's processes, where every process gunicorn replaces
# would leave a file of gauges that child_exit does not merge (gunicorn.conf.py), read by each
# scrape.
PERIODIC_TASK_INTERVAL = Gauge(
    "jobapi_periodic_task_interval_seconds", "How often beat's schedule runs each periodic task.", ["task"],
    multiprocess_mode="max",
)
PERIODIC_TASK_LAST_SUCCESS = Gauge(
    "jobapi_periodic_task_last_success_timestamp_seconds",
    "When a periodic task last ran to its end, or the worker that consumes their queue started.", ["task"],
    multiprocess_mode="max",
)
HTTP_REQUESTS = Counter("jobapi_http_requests", "HTTP requests answered.", ["route", "method", "status"])
HTTP_DURATION = Histogram(
    "jobapi_http_request_duration_seconds", "Time to answer an HTTP request.", ["route", "method"],
    buckets=_HTTP_BUCKETS,
)

MODEL_CALLS = Counter(
    "jobapi_model_calls", "Model calls (each try of one), by model and outcome.", ["model", "outcome"]
)
MODEL_CALL_DURATION = Histogram(
    "jobapi_model_call_duration_seconds", "Time a model took to answer (the tries it answered).", ["model"],
    buckets=_MODEL_BUCKETS,
)
MODEL_TOKENS = Counter("jobapi_model_tokens", "Tokens the model's answers report (usage.total_tokens).", ["model"])
MODEL_BUDGET_REFUSALS = Counter(
    "jobapi_model_budget_refusals",
    "Refusals for a client's spent daily model budget: a submission's (429) or a running job's model call's.",
    ["where"],
)

_enabled: bool | None = None


def group_directory() -> str | None:
    """This process group's metrics directory; None in a process started without one (not by
    scripts/web or scripts/worker: a management command, or gunicorn run by hand)."""
    return os.environ.get(MULTIPROC_DIR_VARIABLE) or None


def enabled() -> bool:
    """Whether this process records: metrics are on and its group has a directory."""
    global _enabled
    if _enabled is None:
        _enabled = bool(settings.METRICS_ENABLED and group_directory())
    return _enabled


def prepare(*, job_names: Iterable[str], final_statuses: Iterable[str], outcomes: Iterable[str],
            disabled_reasons: Iterable[str], periodic_tasks: Iterable[str], model: str,
            model_outcomes: Iterable[str], budget_checks: Iterable[str]) -> None:
    """Every series that can be, at zero: a figure shows (and a rule sees it) before its first event."""
    if not enabled():
        return
    final_statuses, outcomes = list(final_statuses), list(outcomes)
    for job_name in job_names:
        JOBS_SUBMITTED.labels(job_name)
        JOB_QUEUE_WAIT.labels(job_name)
        JOB_RUN.labels(job_name)
        for status in final_statuses:
            JOBS_FINISHED.labels(job_name, status)
    for outcome in outcomes:
        WEBHOOK_ATTEMPTS.labels(outcome)
    for reason in disabled_reasons:
        WEBHOOK_ENDPOINTS_DISABLED.labels(reason)
    for task in periodic_tasks:
        PERIODIC_TASK_RUNS.labels(task)
        PERIODIC_TASK_FAILURES.labels(task)
    for outcome in model_outcomes:
        MODEL_CALLS.labels(model, outcome)
    MODEL_CALL_DURATION.labels(model)
    MODEL_TOKENS.labels(model)
    for where in budget_checks:
        MODEL_BUDGET_REFUSALS.labels(where)


def job_submitted(*, job_name: str) -> None:
    if enabled():
        JOBS_SUBMITTED.labels(job_name).inc()


def job_started(*, job_name: str, waited_seconds: float) -> None:
    if enabled():
        JOB_QUEUE_WAIT.labels(job_name).observe(max(0.0, waited_seconds))


def job_finished(*, job_name: str, status: str, ran_seconds: float | None) -> None:
    if enabled():
        JOBS_FINISHED.labels(job_name, status).inc()
        if ran_seconds is not None:
            JOB_RUN.labels(job_name).observe(max(0.0, ran_seconds))


def webhook_attempted(*, outcome: str, delivered_after_seconds: float | None = None) -> None:
    if enabled():
        WEBHOOK_ATTEMPTS.labels(outcome).inc()
        if delivered_after_seconds is not None:
            WEBHOOK_DELIVERY.observe(max(0.0, delivered_after_seconds))


def webhook_endpoint_disabled(*, reason: str) -> None:
    if enabled():
        WEBHOOK_ENDPOINTS_DISABLED.labels(reason).inc()


def model_answered(*, model: str, seconds: float, tokens: int | None) -> None:
    """A model call's try that the model answered (whatever the answer is worth): once a call,
    its tokens added at once."""
    if enabled():
        MODEL_CALLS.labels(model, "ok").inc()
        MODEL_CALL_DURATION.labels(model).observe(max(0.0, seconds))
        if tokens is not None and tokens > 0:  # a server may report none, or a nonsense figure
            MODEL_TOKENS.labels(model).inc(tokens)


def model_call_failed(*, model: str, outcome: str) -> None:
    if enabled():
        MODEL_CALLS.labels(model, outcome).inc()


def model_budget_refused(*, where: str) -> None:
    if enabled():
        MODEL_BUDGET_REFUSALS.labels(where).inc()


@functools.cache
def periodic_tasks() -> dict[str, float]:
    """The tasks beat's schedule runs, each with its interval in seconds (the shortest, should two
    entries run one task)."""
    intervals: dict[str, float] = {}
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        seconds = entry["schedule"].total_seconds()
        intervals[entry["task"]] = min(seconds, intervals.get(entry["task"], seconds))
    return intervals


def periodic_tasks_awaited(sender: Any = None, **kwargs: Any) -> None:
    """worker_ready, in a worker that consumes the periodic tasks' queue: serve each one's interval
    (beat's schedule), and count each as having run to its end as the worker starts, so that
    PeriodicTaskFailing waits its intervals from then, rather than firing at once for a task that
    has had no run yet (an hourly prune), nor never for one that fails from its first run on (a
    deploy's bug)."""
    if enabled() and settings.MAINTENANCE_QUEUE in sender.app.amqp.queues.consume_from:
        now = time.time()
        for task, seconds in periodic_tasks().items():
            PERIODIC_TASK_INTERVAL.labels(task).set(seconds)
            PERIODIC_TASK_LAST_SUCCESS.labels(task).set(now)


def periodic_run_skipped() -> None:
    """The periodic task running in this thread found another run of it under way and does
    nothing (core.housekeeping.run_alone): its end counts neither as a run nor as a failure. As a
    run to its end it moved the task's last success while the run under way, failing, moved
    nothing: a rule whose every run failed and outlasted its interval never fired
    PeriodicTaskFailing."""
    if current_task:  # a proxy, false outside a task (a call of the function itself)
        current_task.request.periodic_run_skipped = True


def periodic_task_ended(sender: Any = None, state: str | None = None, **kwargs: Any) -> None:
    """task_postrun: a periodic task's run ran to its end (SUCCESS), or did not (an exception, or
    core.rows_apart.RowsFailed once some of its rows raised); one that did nothing beside another
    under way (`periodic_run_skipped`) counts neither. Its runs stop growing while beat is
    down (the BeatNotRunning alert), its last success ages while it fails (PeriodicTaskFailing);
    any other task passes by a dict lookup."""
    if enabled() and sender.name in periodic_tasks():
        if getattr(sender.request, "periodic_run_skipped", False):
            return
        if state == states.SUCCESS:
            PERIODIC_TASK_RUNS.labels(sender.name).inc()
            PERIODIC_TASK_LAST_SUCCESS.labels(sender.name).set(time.time())
        else:
            PERIODIC_TASK_FAILURES.labels(sender.name).inc()


def http_answered(*, route: str, method: str, status: int, seconds: float) -> None:
    if enabled():
        method = method if method in _METHODS else "OTHER"  # a client can send any word
        HTTP_REQUESTS.labels(route, method, str(status)).inc()
        HTTP_DURATION.labels(route, method).observe(seconds)


# A group's directory would hold two files for every process that ever ran in it (gunicorn
# replaces each worker after max_requests: thousands a week), each read by every scrape, until
# scrapes take longer than Prometheus waits. When a process ends, gunicorn's master adds its
# counters and histograms to the group's `<kind>_archive.db` files and removes its own
# (gunicorn.conf.py, child_exit), holding this file locked; a scrape reads the directory holding
# it shared, so it never counts an ended process twice or not at all (a counter that went back
# would read as a reset), nor finds a file gone between listing and reading it.
MERGE_LOCK_FILE = "merge.lock"


@contextmanager
def _directory_shared(directory: str) -> Iterator[None]:
    with open(os.path.join(directory, MERGE_LOCK_FILE), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class _GroupCollector(multiprocess.MultiProcessCollector):
    """prometheus-client's collector, reading the directory while no ended process's files are
    being merged."""

    def __init__(self, registry: CollectorRegistry, path: str) -> None:
        super().__init__(registry, path)
        self._directory = path

    def collect(self) -> Iterable[Metric]:
        with _directory_shared(self._directory):
            return list(super().collect())


def registry(extra: Iterable[Collector] = ()) -> CollectorRegistry | None:
    """What this process group recorded (every process's files), and `extra` collectors; None in
    a process without its group's directory (group_directory), which has nothing to serve."""
    directory = group_directory()
    if directory is None:
        return None
    collected = CollectorRegistry()
    _GroupCollector(collected, directory)
    for collector in extra:
        collected.register(collector)
    return collected


# --- Celery workers: their own port, their pool processes' files ----------------------------


def worker_serve(**kwargs: Any) -> None:
    """worker_ready: serve this worker's metrics on METRICS_PORT (a thread of its main process)."""
    collected = registry() if enabled() and settings.METRICS_PORT else None
    if collected is not None:
        try:
            start_http_server(settings.METRICS_PORT, addr=settings.METRICS_ADDRESS, registry=collected)
        except OSError:  # the port is taken: the worker runs on, its metrics unserved
            logger.exception(
                "Cannot serve metrics on %s:%s: this worker runs on unscraped (the alert WorkerMetricsDown), and "
                "the alerts on its counters go blind (JobFailureRateHigh, ModelProviderFailing; for the deliveries "
                "worker PeriodicTaskFailing, and BeatNotRunning fires while beat runs)",
                settings.METRICS_ADDRESS, settings.METRICS_PORT,
            )


def worker_process_exited(pid: int | None = None, **kwargs: Any) -> None:
    """worker_process_shutdown (in the exiting pool process): its live gauges stop counting.
    (Its counters stay: what it counted happened.)"""
    if enabled():
        multiprocess.mark_process_dead(pid or os.getpid())
