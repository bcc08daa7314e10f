"""The per-owner count of unfinished jobs that the submit's cap reads: exact whichever way a job
is inserted, finished or deleted (it is kept by triggers on the jobs table)."""
from __future__ import annotations

import importlib
from typing import Any

import pytest
from django.db import connection

from core.models import Client
from core.services import client_create
from jobs import services
from jobs.models import Job, UnfinishedJobCount
from tests.conftest import Api

S = Job.Status
BODY = {"job_name": "api.tasks.hello_world"}


def unfinished(owner: Client) -> int:
    row = UnfinishedJobCount.objects.filter(owner=owner).first()
    return row.unfinished if row else 0


def actual(owner: Client) -> int:
    return Job.objects.filter(owner=owner, status__in=Job.ACTIVE_STATUSES).count()


@pytest.mark.django_db
def test_the_count_follows_every_transition_and_delete() -> None:
    owner, other = client_create(name="owner"), client_create(name="other")
    jobs = Job.objects.bulk_create(Job(owner=owner, job_name=BODY["job_name"]) for _ in range(4))
    Job.objects.create(owner=owner, job_name=BODY["job_name"], status=S.SUCCESS)
    assert unfinished(owner) == actual(owner) == 4

    services.job_start(job_id=jobs[0].id)
    services.job_set_retrying(job_id=jobs[0].id, retrying=True)
    assert unfinished(owner) == 4  # still unfinished: nothing moves

    services.job_finish(job_id=jobs[0].id, status=S.SUCCESS, result=None)
    services.job_finish(job_id=jobs[0].id, status=S.FAILURE)  # no second final state: no change
    services.job_cancel(owner=owner, job_id=jobs[1].id)  # a queued job, cancelled at once
    assert unfinished(owner) == actual(owner) == 2

    Job.objects.filter(pk=jobs[2].pk).delete()  # deleted unfinished (the admin can)
    Job.objects.filter(status=S.SUCCESS).delete()  # deleted final: no change
    Job.objects.filter(pk=jobs[3].pk).update(owner=other)
    assert (unfinished(owner), unfinished(other)) == (actual(owner), actual(other)) == (0, 1)

    Job.objects.filter(pk=jobs[3].pk).update(status=S.PENDING, owner=owner)  # back, by hand
    assert (unfinished(owner), unfinished(other)) == (1, 0)


@pytest.mark.django_db
def test_the_migration_counts_the_jobs_already_there() -> None:
    migration = importlib.import_module("jobs.migrations.0002_unfinishedjobcount")
    owners = [client_create(name=f"owner-{i}") for i in range(3)]
    for count, owner in enumerate(owners):
        Job.objects.bulk_create(Job(owner=owner, job_name=BODY["job_name"]) for _ in range(count))
        Job.objects.create(owner=owner, job_name=BODY["job_name"], status=S.FAILURE)
    UnfinishedJobCount.objects.all().delete()

    with connection.cursor() as cursor:
        cursor.execute(migration.BACKFILL)

    assert [unfinished(owner) for owner in owners] == [actual(owner) for owner in owners] == [0, 1, 2]


def test_a_job_that_finishes_frees_its_place_under_the_cap(api: Api, settings: Any) -> None:
    settings.JOB_MAX_UNFINISHED_PER_CLIENT = 1
    first = api.post("/api/jobs/", json={**BODY, "payload": {"message": "first"}})
    assert first.status_code == 202

    assert api.wait(first.json()["id"])["status"] == "SUCCESS"

    assert api.post("/api/jobs/", json=BODY).status_code == 202
    assert unfinished(api.client) == actual(api.client)
