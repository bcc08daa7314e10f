"""The per-owner counts the caps read (unfinished jobs for the submit, running jobs for the start,
persisted results' bytes for the results quota): exact whichever way a job or a result is
inserted, started, finished or deleted (they are kept by triggers)."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from core.models import Client
from core.services import client_create
from jobs import transitions
from jobs.models import Job, JobCounts, JobResult
from tests.conftest import Api, script_output

S = Job.Status
BODY = {"job_name": "api.tasks.hello_world"}


def unfinished(owner: Client) -> int:
    row = JobCounts.objects.filter(owner=owner).first()
    return row.unfinished if row else 0


def running(owner: Client) -> int:
    row = JobCounts.objects.filter(owner=owner).first()
    return row.running if row else 0


def actual(owner: Client) -> int:
    return Job.objects.filter(owner=owner, status__in=Job.ACTIVE_STATUSES).count()


def actually_running(owner: Client) -> int:
    return Job.objects.filter(owner=owner, status__in=Job.RUNNING_STATUSES).count()


@pytest.mark.django_db
def test_the_count_follows_every_transition_and_delete() -> None:
    owner, other = client_create(name="owner"), client_create(name="other")
    jobs = Job.objects.bulk_create(Job(owner=owner, job_name=BODY["job_name"]) for _ in range(4))
    Job.objects.create(owner=owner, job_name=BODY["job_name"], status=S.SUCCESS)
    assert unfinished(owner) == actual(owner) == 4

    transitions.job_start(job_id=jobs[0].id)
    assert (unfinished(owner), running(owner)) == (4, 1)
    transitions.job_set_retrying(job_id=jobs[0].id, retrying=True)
    assert (unfinished(owner), running(owner)) == (4, 1)  # still running: nothing moves

    transitions.job_finish(job_id=jobs[0].id, status=S.SUCCESS, result=None)
    transitions.job_finish(job_id=jobs[0].id, status=S.FAILURE)  # no second final state: no change
    transitions.job_cancel(owner=owner, job_id=jobs[1].id)  # a queued job, canceled at once
    assert unfinished(owner) == actual(owner) == 2
    assert running(owner) == actually_running(owner) == 0
    Job.objects.filter(pk=jobs[2].pk).update(status=S.STARTED)  # by hand
    assert running(owner) == actually_running(owner) == 1

    Job.objects.filter(pk=jobs[2].pk).delete()  # deleted unfinished (the admin can)
    Job.objects.filter(status=S.SUCCESS).delete()  # deleted final: no change
    Job.objects.filter(pk=jobs[3].pk).update(owner=other)
    assert (unfinished(owner), unfinished(other)) == (actual(owner), actual(other)) == (0, 1)

    Job.objects.filter(pk=jobs[3].pk).update(status=S.PENDING, owner=owner)  # back, by hand
    assert (unfinished(owner), unfinished(other)) == (1, 0)
    assert running(owner) == actually_running(owner) == 0


@pytest.mark.django_db
def test_the_results_bytes_follow_every_result_inserted_or_deleted() -> None:
    owner = client_create(name="results")
    first = JobResult.objects.create(owner=owner, task_name="t", result={"text": "é" * 10})
    JobResult.objects.create(owner=owner, task_name="t", result=None)

    with connection.cursor() as cursor:
        cursor.execute("SELECT COALESCE(SUM(octet_length(result::text)), 0) FROM jobs_jobresult WHERE owner_id = %s",
                       [owner.id])
        (stored,) = cursor.fetchone()
    assert JobCounts.objects.get(owner=owner).result_bytes == stored > 20

    first.delete()
    assert JobCounts.objects.get(owner=owner).result_bytes == 0


@pytest.mark.django_db
def test_deleting_many_results_takes_their_bytes_from_each_owners_count_in_one_update() -> None:
    # Given two clients with many results each
    owners = [client_create(name=f"many-results-{i}") for i in range(2)]
    JobResult.objects.bulk_create([JobResult(owner=owner, task_name="t", result={"n": n})
                                   for owner in owners for n in range(500)])

    # When they are deleted in one statement (a client's deletion, a batch of the prune)
    with connection.cursor() as cursor:
        updates = "SELECT n_tup_upd FROM pg_stat_xact_user_tables WHERE relname = 'jobs_jobcounts'"
        cursor.execute(updates)
        (before,) = cursor.fetchone()
        cursor.execute("DELETE FROM jobs_jobresult WHERE owner_id = ANY(%s)", [[owner.pk for owner in owners]])
        cursor.execute(updates)
        (after,) = cursor.fetchone()

    # Then each owner's count row was updated once, not once a result: in one transaction each
    # update of a row walks every version the earlier ones left, so a client's deletion with
    # 20,000 results spent 4.3 s there, quadratic in its results (hours for a year of them)
    assert after - before == 2
    assert [JobCounts.objects.get(owner=owner).result_bytes for owner in owners] == [0, 0]


@pytest.mark.django_db
def test_the_migrations_count_the_jobs_and_results_already_there() -> None:
    migrations = [importlib.import_module(f"jobs.migrations.{name}") for name in ("0002_unfinishedjobcount", "0004_jobcounts")]
    owners = [client_create(name=f"owner-{i}") for i in range(3)]
    for count, owner in enumerate(owners):
        Job.objects.bulk_create(Job(owner=owner, job_name=BODY["job_name"]) for _ in range(count))
        Job.objects.bulk_create(Job(owner=owner, job_name=BODY["job_name"], status=S.STARTED) for _ in range(count))
        Job.objects.create(owner=owner, job_name=BODY["job_name"], status=S.FAILURE)
        JobResult.objects.create(owner=owner, task_name="t", result=count)
    JobCounts.objects.all().delete()

    with connection.cursor() as cursor:
        cursor.execute(migrations[0].BACKFILL.replace("jobs_unfinishedjobcount", "jobs_jobcounts"))
        for statement in migrations[1].BACKFILL["postgresql"]:
            cursor.execute(statement)

    assert [unfinished(owner) for owner in owners] == [actual(owner) for owner in owners] == [0, 2, 4]
    assert [running(owner) for owner in owners] == [actually_running(owner) for owner in owners] == [0, 1, 2]
    assert [JobCounts.objects.get(owner=owner).result_bytes for owner in owners] == [1, 1, 1]


@pytest.mark.django_db
def test_a_client_has_its_count_row_from_its_creation_and_the_migration_gives_one_to_those_without() -> None:
    migration = importlib.import_module("jobs.migrations.0010_jobcounts_from_the_client")
    owner = client_create(name="new")
    assert JobCounts.objects.filter(owner=owner).values_list("unfinished", "running", "result_bytes").get() == (0, 0, 0)

    JobCounts.objects.all().delete()
    with connection.cursor() as cursor:
        cursor.execute(migration.BACKFILL["postgresql"])

    assert JobCounts.objects.filter(owner=owner).values_list("unfinished", "running", "result_bytes").get() == (0, 0, 0)


def test_a_job_that_finishes_frees_its_place_under_the_cap(api: Api, settings: Any) -> None:
    settings.JOB_MAX_UNFINISHED_PER_CLIENT = 1
    first = api.post("/api/jobs/", json={**BODY, "payload": {"message": "first"}})
    assert first.status_code == 202

    assert api.wait(first.json()["id"])["status"] == "SUCCESS"

    second = api.post("/api/jobs/", json=BODY)
    assert second.status_code == 202

    # Read once the worker is done with it too: read while it runs, the count and the rows are two
    # statements apart, and the job may finish between them.
    assert api.wait(second.json()["id"])["status"] == "SUCCESS"
    assert unfinished(api.client) == actual(api.client) == 0


SQLITE_SCRIPT = """
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from core.services import client_create
from jobs.models import Job, JobCounts, JobResult
owner = client_create(name="embedded")
job = Job.objects.create(owner=owner, job_name="api.tasks.hello_world")
def counts():
    row = JobCounts.objects.get(owner=owner)
    return [row.unfinished, row.running, row.result_bytes, row.job_bytes]
seen = [counts()]
Job.objects.filter(pk=job.pk).update(status=Job.Status.STARTED)
seen.append(counts())
Job.objects.filter(pk=job.pk).update(status=Job.Status.SUCCESS)
JobResult.objects.create(owner=owner, job=job, task_name="t", result={"a": 1})
seen.append(counts())
Job.objects.filter(pk=job.pk).delete()
seen.append(counts())
print(seen)
"""


def test_the_count_is_kept_on_sqlite_after_every_migration(tmp_path: Path) -> None:
    # `make run`'s database: a later migration that rebuilt jobs_job there would drop the
    # triggers with the old table, and the cap would count nothing.
    counts = script_output(SQLITE_SCRIPT, database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}", data_dir=tmp_path)

    assert counts == "[[1, 0, 0, 4], [1, 1, 0, 4], [0, 0, 8, 4], [0, 0, 8, 0]]"
