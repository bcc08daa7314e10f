"""The lease on a running step: while its worker runs it, a heartbeat on the job's row
(`step_heartbeat_at`), so that another copy of its message runs nothing meanwhile.

Steps are acknowledged late: a worker that loses its broker connection (or RabbitMQ's
consumer_timeout) has its unacknowledged messages requeued at once, marked redelivered, while their
steps go on running. A redelivered message runs its step again (jobs.tasks: it takes it for a cut-off
run), and whatever the step pays for (a model call) was paid twice. With the lease, such a copy
looks again once the heartbeat could have gone stale: by then the first copy has moved the job on
(and the copy is stale or finds the job final), or it is gone and the copy runs the step.

Every heartbeat is written, and every one is judged stale, by the database's clock: each host's
own (timezone.now()) made a worker whose clock ran two thirds of a lease ahead take every live
lease for stale and run the step beside it, and one whose clock ran behind write heartbeats
already stale.
"""
from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import Error, connections
from django.db.models import Q
from django.db.models.functions import Now

from jobs import sql
from jobs.models import Job

logger = logging.getLogger(__name__)

# A heartbeat this often within a lease: two may fail (a slow database) before it goes stale.
_BEATS_PER_LEASE = 3


class StepLeased(Exception):
    """Another run of the step holds its lease (its heartbeat is fresh): look again in `wait_seconds`."""

    def __init__(self, wait_seconds: float) -> None:
        super().__init__(wait_seconds)
        self.wait_seconds = wait_seconds


class HeartbeatUnstarted(Exception):
    """The lease's heartbeat thread could not start (RuntimeError "can't start new thread": the
    worker at its limit of processes or threads): the worker's trouble, not the job's."""


def database_now(alias: str = "default") -> sql.Expression:
    """The database's clock, as Django's Now() writes it, for a heartbeat that jobs.sql writes."""
    if connections[alias].vendor == "sqlite":
        return sql.Expression("STRFTIME('%%Y-%%m-%%d %%H:%%M:%%f', 'NOW')")
    return sql.Expression("STATEMENT_TIMESTAMP()")


def step_lease_free_sql(alias: str = "default") -> tuple[str, list[Any]]:
    """The condition that no run holds the running job's step lease, for jobs.sql.job_update_if,
    with its parameter: no heartbeat, or one older than the lease by the database's clock
    (step_lease_take's, in the ORM)."""
    lease = timedelta(seconds=settings.JOB_STEP_LEASE_SECONDS)
    if connections[alias].vendor == "sqlite":  # STRFTIME's own arithmetic (Now() - lease calls a Python function)
        older, params = "STRFTIME('%%Y-%%m-%%d %%H:%%M:%%f', 'NOW', %s)", [f"-{lease.total_seconds()} seconds"]
    else:
        older, params = f"{database_now(alias)} - %s", [lease]
    return f"(step_heartbeat_at IS NULL OR step_heartbeat_at < {older})", params


def step_lease_take(*, job_id: uuid.UUID) -> None:
    """Take the lease on the running job's current step for this run, for a copy of its message
    that may be a second one; the first run's start takes it in its own UPDATE (no query more).
    Raises StepLeased, with the seconds until the run holding it would have let it go stale (at
    least one)."""
    lease = timedelta(seconds=settings.JOB_STEP_LEASE_SECONDS)
    free = Q(step_heartbeat_at__isnull=True) | Q(step_heartbeat_at__lt=Now() - lease)
    if Job.objects.filter(free, pk=job_id).update(step_heartbeat_at=Now()):
        return
    held = Job.objects.filter(pk=job_id).values_list("step_heartbeat_at", Now()).first()
    raise step_leased(held=held[0] if held else None, now=held[1] if held else None)


def step_leased(*, held: datetime | None, now: datetime | None) -> StepLeased:
    """StepLeased for a run that found the lease held by the heartbeat `held` at the database's
    time `now`: the seconds until it would go stale, at least one (at once: let go since, or the
    job pruned)."""
    if held is None or now is None:
        return StepLeased(1.0)
    lease = timedelta(seconds=settings.JOB_STEP_LEASE_SECONDS)
    return StepLeased(max(1.0, (held + lease - now).total_seconds()))


@contextmanager
def step_lease_kept(*, job_id: uuid.UUID) -> Iterator[None]:
    """Keep the lease taken (by the step's start, or step_lease_take) while the block runs the step:
    a daemon thread writes the heartbeat, on a database connection of its own (Django's are per
    thread) opened at its first beat and closed with it: a step shorter than a beat costs none.
    The lease is let go when the job moves on to its next step or a retry (those writes clear it);
    a final state leaves it, but a copy looks at the job's state before its lease. Left by a
    database failure, which the task retries, it is not cleared: the step's connection may be
    broken (psycopg2 closes it when PostgreSQL restarts, and a write then raises InterfaceError,
    which the task does not retry), so the retry waits at most a lease for it to go stale.
    Raises HeartbeatUnstarted, the lease let go, when its thread cannot start."""
    stop = threading.Event()
    beating = threading.Thread(target=_beat, args=(job_id, stop), name=f"lease-{job_id}", daemon=True)
    try:
        # Started inside the try: a soft time limit raised before it would leave the thread beating.
        try:
            beating.start()
        except RuntimeError as exc:
            # The lease let go (this connection is sound), so that the task's retry runs the step
            # at once rather than wait for a heartbeat of this run's to go stale.
            Job.objects.filter(pk=job_id).update(step_heartbeat_at=None)
            logger.warning("Job %s: its running step's heartbeat thread could not start (%s): the step is retried",
                           job_id, exc)
            raise HeartbeatUnstarted(str(exc)) from exc
        yield
    finally:
        _stop(beating, stop)


def _stop(beating: threading.Thread, stop: threading.Event) -> None:
    stop.set()
    if beating.is_alive():  # not when a time limit came before it started
        beating.join()


def _beat(job_id: uuid.UUID, stop: threading.Event) -> None:
    interval = settings.JOB_STEP_LEASE_SECONDS / _BEATS_PER_LEASE
    try:
        while not stop.wait(interval):
            try:
                Job.objects.filter(pk=job_id, status__in=Job.RUNNING_STATUSES).update(step_heartbeat_at=Now())
            except Error:
                # Closed so that the next beat connects again: on the broken connection (its backend
                # gone) the next beat raised InterfaceError, which ended the thread, and the lease
                # went stale while the step ran: a copy of its message ran it beside this run.
                logger.warning("Job %s: its running step's heartbeat could not be written", job_id, exc_info=True)
                connections["default"].close()
    finally:
        connections.close_all()
