"""jobs/sql.py: the cap-checked insert, the conditional update and the poll's read write and
read what the ORM would."""
from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, transaction
from django.utils import timezone

from core.models import Client
from core.services import client_create
from jobs import sql
from jobs.models import Job, JobCounts

pytestmark = pytest.mark.django_db


def test_the_insert_refuses_at_the_cap_and_writes_every_field_below_it() -> None:
    owner = client_create(name="sql-cap")
    first = Job(owner=owner, job_name="api.tasks.hello_world", payload={"message": "é"}, webhook_events=["job.failed"])
    second = Job(owner=owner, job_name="api.tasks.hello_world")

    assert sql.job_insert_below_cap(first, cap=1)
    assert not sql.job_insert_below_cap(second, cap=1)
    assert sql.job_insert_below_cap(second, cap=0)  # 0: no cap

    stored = Job.objects.get(pk=first.pk)
    assert (stored.payload, stored.webhook_events, stored.status) == ({"message": "é"}, ["job.failed"], "PENDING")
    assert stored.created_at == first.created_at


def test_a_conditional_update_returns_the_row_as_updated_or_nothing() -> None:
    owner = client_create(name="sql-update")
    job = Job.objects.create(owner=owner, job_name="api.tasks.hello_world", status=Job.Status.STARTED)
    finished = timezone.now()

    updated = sql.job_update_if(job.id, condition=sql.NOT_FINAL, status=Job.Status.SUCCESS, finished_at=finished,
                                result={"text": "é", "n": [1, None]})
    again = sql.job_update_if(job.id, condition=sql.NOT_FINAL, status=Job.Status.FAILURE)

    assert again is None
    stored = Job.objects.get(pk=job.pk)
    assert updated is not None
    assert (updated.status, updated.finished_at, updated.result) == (stored.status, finished, {"text": "é", "n": [1, None]})
    assert stored.status == Job.Status.SUCCESS and updated.owner_id == owner.id


def test_the_poll_reads_only_the_owners_job() -> None:
    owner, other = client_create(name="sql-owner"), client_create(name="sql-other")
    job = Job.objects.create(owner=owner, job_name="x", payload={"a": 1})

    assert sql.job_of_owner(job.id, owner.id) is not None
    assert sql.job_of_owner(job.id, other.id) is None


def submitted(owner: Client) -> Job:
    """A job as a submission inserts it, claimed for dispatch (dispatched_at): the suite's beat
    sweeps the committed jobs left unclaimed past their grace every second, and its worker ran
    the first one while the second submission waited, which found its owner under its cap again."""
    return Job(owner=owner, job_name="api.tasks.hello_world", dispatched_at=timezone.now())


@pytest.mark.django_db(transaction=True)
def test_two_submissions_at_once_never_take_an_owner_past_its_cap() -> None:
    # Given an owner one job under its cap of 2, and a submission whose transaction is still open
    # (one with an Idempotency-Key commits its key after its job) when a second one comes
    owner = client_create(name="sql-cap-race")
    assert sql.job_insert_below_cap(submitted(owner), cap=2)
    first_inserted, outcomes = threading.Event(), {}

    def first() -> None:
        try:
            with transaction.atomic():
                outcomes["first"] = sql.job_insert_below_cap(submitted(owner), cap=2)
                first_inserted.set()
                time.sleep(1.0)  # the second submission comes meanwhile
        finally:
            first_inserted.set()
            connection.close()

    def second() -> None:
        try:
            first_inserted.wait(10)
            outcomes["second"] = sql.job_insert_below_cap(submitted(owner), cap=2)
        finally:
            connection.close()

    # When both run
    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)

    # Then the second is refused: the owner has 2 unfinished jobs, not 3
    assert outcomes == {"first": True, "second": False}
    assert Job.objects.filter(owner=owner).count() == 2
    assert JobCounts.objects.get(owner=owner).unfinished == 2
