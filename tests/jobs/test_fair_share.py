"""The running cap (JOB_MAX_RUNNING_PER_CLIENT): a job over it goes back to wait, keeping its place,
and the next waiting job is published as soon as a place is free. (End to end, against a greedy
client and `make run`'s workers: tests/faults/test_greedy_client.py.)"""
from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from core.services import client_create
from jobs import dispatch, sql, transitions
from jobs.models import Job

pytestmark = pytest.mark.django_db(transaction=True)

S = Job.Status


@pytest.fixture
def jobs(settings: Any, monkeypatch: pytest.MonkeyPatch) -> list[Job]:
    settings.JOB_MAX_RUNNING_PER_CLIENT = 1
    # The suite's live worker and beat run beside these tests: nothing here reaches them. What
    # would be published is not (the worker would run it), and the jobs are younger than the
    # sweeper's grace (it would claim them by its own cap).
    monkeypatch.setattr(dispatch, "job_publish", lambda *, job, countdown=None: None)
    owner = client_create(name="fair")
    now = timezone.now()
    return [
        Job.objects.create(owner=owner, job_name="api.tasks.hello_world", dispatched_at=now,
                           created_at=now - timedelta(milliseconds=10 - n))
        for n in range(3)
    ]


def test_a_job_over_the_cap_waits_undispatched(jobs: list[Job]) -> None:
    assert transitions.job_start(job_id=jobs[0].id) is not None

    with pytest.raises(transitions.OverRunningCap):
        transitions.job_start(job_id=jobs[1].id)

    waiting = Job.objects.get(pk=jobs[1].pk)
    assert (waiting.status, waiting.dispatched_at) == (S.PENDING, None)


def test_the_sweeper_takes_as_many_as_the_cap_leaves_room_for_oldest_first(jobs: list[Job]) -> None:
    transitions.job_start(job_id=jobs[0].id)
    Job.objects.filter(pk__in=[jobs[1].pk, jobs[2].pk]).update(dispatched_at=None)
    now = timezone.now()

    assert sql.jobs_waiting_claim(now=now, grace_before=now, cap=1, limit=10) == []  # no room
    transitions.job_finish(job_id=jobs[0].id, status=S.SUCCESS)  # publishes the next one itself

    assert [job.pk for job in Job.objects.filter(dispatched_at__isnull=False, status=S.PENDING)] == [jobs[1].pk]
    assert Job.objects.get(pk=jobs[2].pk).dispatched_at is None
    assert sql.jobs_waiting_claim(now=now, grace_before=now, cap=2, limit=10)[0].pk == jobs[2].pk


def test_no_cap_starts_every_job(jobs: list[Job], settings: Any) -> None:
    settings.JOB_MAX_RUNNING_PER_CLIENT = 0

    assert all(transitions.job_start(job_id=job.id) is not None for job in jobs)


def test_without_a_cap_two_sweepers_at_once_share_an_owners_backlog() -> None:
    # Given no running cap and one owner's five jobs waiting for dispatch, due later than the
    # suite's own sweeper looks (it runs beside these tests), and a sweeper that has claimed two
    # of them and not committed yet
    owner = client_create(name="fair-uncapped")
    later = timezone.now() + timedelta(hours=1)
    waiting = [
        Job.objects.create(owner=owner, job_name="api.tasks.hello_world", created_at=later + timedelta(seconds=n))
        for n in range(5)
    ]
    now = later + timedelta(minutes=1)
    first_claimed, second_done, claimed = threading.Event(), threading.Event(), {}

    def sweeper(name: str, wait_for: threading.Event | None, then: threading.Event) -> None:
        try:
            if wait_for is not None:
                wait_for.wait(10)
            with transaction.atomic():
                claimed[name] = sql.jobs_waiting_claim(now=now, grace_before=now, cap=0, limit=2, owner_id=owner.pk)
                then.set()
                if wait_for is None:
                    second_done.wait(10)  # holds its claim while the second sweeper runs
        finally:
            then.set()
            connection.close()

    # When a second sweeper claims meanwhile
    threads = [threading.Thread(target=sweeper, args=("first", None, first_claimed)),
               threading.Thread(target=sweeper, args=("second", first_claimed, second_done))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)

    # Then it takes the next two: the first locked only the jobs it claimed, not the owner's
    # whole backlog
    assert [job.pk for job in claimed["first"]] == [job.pk for job in waiting[:2]]
    assert [job.pk for job in claimed["second"]] == [job.pk for job in waiting[2:4]]
