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
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from core.errors import Conflict
from core.services import client_create
from jobs import hand_overs, transitions
from jobs.models import Job, JobCounts, JobEvent

pytestmark = pytest.mark.django_db(transaction=True)

S = Job.Status
ROUNDS = 12


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
        if handed is not None:
            hand_overs.job_step_hand_over(job_id=job.id, step=1, step_input=None, dispatched_at=handed)

    # When, for each in turn, its deadline passes, and its worker starts and finishes it as its
    # client and the deadline sweep cancel it
    for job in jobs:
        Job.objects.filter(pk=job.pk).update(deadline=timezone.now() - timedelta(seconds=1))
        _all_at_once(_worker(job, handed), _cancel(job), transitions.jobs_cancel_past_deadline)

    # Then each ended once, its one final event naming the state the API shows, and last
    for job in Job.objects.filter(owner=owner):
        events = list(JobEvent.objects.filter(job_id=job.id).order_by("id").values_list("event_type", flat=True))
        assert job.status in Job.FINAL_STATUSES, job
        finals = [event for event in events if event in transitions.FINAL_EVENT_TYPES.values()]
        assert finals == [transitions.FINAL_EVENT_TYPES[job.status]], (job, events)
        assert events[-1] == finals[0] and events.count("job.started") <= 1, (job, events)
    # ...and nothing is counted as unfinished or running any more
    counts = JobCounts.objects.get(owner=owner)
    assert (counts.unfinished, counts.running) == (0, 0)
