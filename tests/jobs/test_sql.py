"""jobs/sql.py: the cap-checked insert, the conditional update and the poll's read write and
read what the ORM would."""
from __future__ import annotations

import pytest
from django.utils import timezone

from core.services import client_create
from jobs import sql
from jobs.models import Job

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
