"""A job's transitions racing each other on connections of their own, as a worker, the client and
the deadline sweep meet in production: a start, a finish, a client's cancel and the deadline's
cancel of one job at the same moment. Whatever order they commit in, the job ends once: one final
state, one final event that names it (never a job.succeeded for a job shown canceled), no event
after it, and its owner's counts as exact as if they had come one by one."""
from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from core.errors import Conflict
from core.services import client_create
from jobs import deadlines, dispatch, hand_overs, transitions
from jobs.models import Job, JobCounts, JobEvent
from tests.locks import backends_blocked

pytestmark = pytest.mark.django_db(transaction=True)

S = Job.Status
ROUNDS = 12
# How far ahead of the suite's beat the scheduled jobs' sweeper's clock runs.
SWEEPER_AHEAD = timedelta(hours=1)


def _all_at_once(*work: Callable[[], Any]) -> None:
    """Run each of `work` in a thread on a connection of its own, released together."""
    barrier = threading.Barrier(len(work))

    def run(call: Callable[[], Any]) -> None:
        try:
            barrier.wait()
            call()
        except Conflict:
            pass  # the client's cancel of a job final already: its 409
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=len(work)) as pool:
        for outcome in [pool.submit(run, call) for call in work]:
            outcome.result()


def _cancel(job: Job) -> Callable[[], Any]:
    return lambda: transitions.job_cancel(owner=job.owner, job_id=job.id)


def _worker(job: Job, handed: datetime | None) -> Callable[[], Any]:
    """The job's worker: its step's message starts it (the first step's, or that of the step
    handed over at `handed`), and runs it to its end if that says to."""
    def run() -> None:
        if handed is None:
            started = transitions.job_start(job_id=job.id)
        else:
            started = hand_overs.job_step_start(job_id=job.id, step=1, dispatched_at=handed, redelivered=False)
        if started is not None:
            transitions.job_finish(job_id=job.id, status=S.SUCCESS, result={"ok": 1})

    return run


@pytest.mark.parametrize("where", ["queued", "running", "between steps"])
def test_a_start_a_finish_and_two_cancels_at_once_end_the_job_once(where: str, settings: Any) -> None:
    # Given jobs queued, running, or between two steps (the next handed over, not started), no
    # running cap in the way
    settings.JOB_MAX_RUNNING_PER_CLIENT = 0
    owner = client_create(name=f"races-{where}")
    jobs = Job.objects.bulk_create(
        Job(owner=owner, job_name="api.tasks.hello_world", dispatched_at=timezone.now()) for _ in range(ROUNDS)
    )
    handed = timezone.now() if where == "between steps" else None
    for job in jobs:
        if where != "queued":
            transitions.job_start(job_id=job.id)
            # That run cut off, its lease gone stale: the worker below is its message's second
            # copy, which runs the job again (one whose run is alive waits: jobs.leases)
            Job.objects.filter(pk=job.pk).update(step_heartbeat_at=None)
        if handed is not None:
            hand_overs.job_step_hand_over(job_id=job.id, step=1, step_input=None, dispatched_at=handed)

    # When, for each in turn, its deadline passes, and its worker starts and finishes it as its
    # client and the deadline sweep cancel it
    for job in jobs:
        Job.objects.filter(pk=job.pk).update(deadline=timezone.now() - timedelta(seconds=1))
        _all_at_once(_worker(job, handed), _cancel(job), deadlines.jobs_cancel_past_deadline)

    # Then each ended once, its one final event naming the state the API shows, and last; and
    # nothing is counted as unfinished or running any more
    _each_ended_once(owner)


def test_a_scheduled_job_falling_due_as_it_is_canceled_ends_once(settings: Any, monkeypatch: Any) -> None:
    # Given jobs scheduled for later, no running cap in the way, and a broker that takes the
    # sweeper's messages for this test's worker alone (the session's worker would be a third
    # party racing them). They fall due by this test's sweeper's clock, an hour ahead, and not
    # by the suite's beat's: its sweep (every second, with no grace for a scheduled job) claimed
    # one as it fell due and published it to that worker all the same.
    settings.JOB_MAX_RUNNING_PER_CLIENT = 0
    monkeypatch.setattr(dispatch, "job_publish", lambda *, job, countdown=None: None)
    monkeypatch.setattr(dispatch, "timezone", SimpleNamespace(now=lambda: timezone.now() + SWEEPER_AHEAD))
    owner = client_create(name="races-scheduled")
    later = timezone.now() + 2 * SWEEPER_AHEAD
    jobs = Job.objects.bulk_create(Job(owner=owner, job_name="api.tasks.hello_world", run_at=later) for _ in range(ROUNDS))

    def sweeper_then_worker(job: Job) -> None:
        """The sweeper publishes what is due; the worker runs the message it published, if any."""
        dispatch.jobs_publish_waiting(owner_id=owner.pk)
        dispatched_at = Job.objects.get(pk=job.pk).dispatched_at
        if dispatched_at is not None and transitions.job_start(job_id=job.id, dispatched_at=dispatched_at):
            transitions.job_finish(job_id=job.id, status=S.SUCCESS, result={"ok": 1})

    # When, for each in turn, it falls due as its client cancels it
    for job in jobs:
        Job.objects.filter(pk=job.pk).update(run_at=timezone.now() + SWEEPER_AHEAD)
        _all_at_once(lambda job=job: sweeper_then_worker(job), _cancel(job))

    # Then each ended once: canceled unpublished, canceled before its message ran, or run
    _each_ended_once(owner)


def _each_ended_once(owner: Any) -> None:
    """Each of the owner's jobs is final, with one final event naming the state the API shows,
    its last, and at most one job.started; the owner's counts are back to zero."""
    for job in Job.objects.filter(owner=owner):
        events = list(JobEvent.objects.filter(job_id=job.id).order_by("id").values_list("event_type", flat=True))
        assert job.status in Job.FINAL_STATUSES, job
        finals = [event for event in events if event in transitions.FINAL_EVENT_TYPES.values()]
        assert finals == [transitions.FINAL_EVENT_TYPES[job.status]], (job, events)
        assert events[-1] == finals[0] and events.count("job.started") <= 1, (job, events)
    counts = JobCounts.objects.get(owner=owner)
    assert (counts.unfinished, counts.running) == (0, 0)


@pytest.mark.parametrize("canceler", ["client", "deadline"])
def test_a_start_waiting_behind_a_cancel_of_its_job_does_not_deadlock(canceler: str, settings: Any) -> None:
    # Given a queued job of an owner with a running cap (its start reads the owner's count row
    # locked), its deadline passed: in the transaction holding its row, so that the suite's beat
    # (its deadline rule runs every second) does not cancel it first; and claimed for dispatch,
    # as a submission leaves it, so that beat's sweep does not run it
    settings.JOB_MAX_RUNNING_PER_CLIENT = 5
    owner = client_create(name=f"races-lock-order-{canceler}")
    job = Job.objects.create(owner=owner, job_name="api.tasks.hello_world", dispatched_at=timezone.now(),
                             deadline=timezone.now() + timedelta(hours=1))
    cancel = _cancel(job) if canceler == "client" else deadlines.jobs_cancel_past_deadline

    # When its cancel holds the job's row as the worker's start comes, and then writes it final
    with ThreadPoolExecutor(max_workers=1) as pool:
        with transaction.atomic():
            Job.objects.select_for_update().get(pk=job.pk)
            Job.objects.filter(pk=job.pk).update(deadline=timezone.now())
            start = pool.submit(_on_own_connection(lambda: transitions.job_start(job_id=job.id)))
            with connection.cursor() as cursor:
                backends_blocked(cursor, 1)
            cancel()

        # Then neither is aborted by PostgreSQL's deadlock detection: the start waits for the
        # cancel, then finds the job final and runs nothing
        assert start.result(timeout=10) is None
    job.refresh_from_db()
    assert job.status == S.REVOKED
    counts = JobCounts.objects.get(owner=owner)
    assert (counts.unfinished, counts.running) == (0, 0)


def _on_own_connection(call: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        try:
            return call()
        finally:
            connection.close()

    return run

