"""A job's transitions racing each other on connections of their own, as a worker, the client and
the deadline sweep meet in production: a start, a finish, a client's cancel and the deadline's
cancel of one job at the same moment. Whatever order they commit in, the job ends once: one final
state, one final event that names it (never a job.succeeded for a job shown canceled), no event
after it, and its owner's counts as exact as if they had come one by one."""
from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from core.errors import Conflict
from core.services import client_create
from jobs import transitions
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


@pytest.mark.parametrize("started", [False, True], ids=["queued", "running"])
def test_a_start_a_finish_and_two_cancels_at_once_end_the_job_once(started: bool, settings: Any) -> None:
    # Given jobs queued (or running, no running cap in the way)
    settings.JOB_MAX_RUNNING_PER_CLIENT = 0
    owner = client_create(name=f"races-{started}")
    jobs = Job.objects.bulk_create(
        Job(owner=owner, job_name="api.tasks.hello_world", dispatched_at=timezone.now()) for _ in range(ROUNDS)
    )
    for job in jobs:
        if started:
            transitions.job_start(job_id=job.id)

    # When, for each in turn, its deadline passes, and its worker starts and finishes it as its
    # client and the deadline sweep cancel it
    for job in jobs:
        Job.objects.filter(pk=job.pk).update(deadline=timezone.now() - timedelta(seconds=1))
        _all_at_once(
            lambda job=job: (transitions.job_start(job_id=job.id),
                             transitions.job_finish(job_id=job.id, status=S.SUCCESS, result={"ok": 1})),
            _cancel(job),
            transitions.jobs_cancel_past_deadline,
        )

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
