"""The bytes of each client's stored jobs' payloads and metadata (the job storage quota's count,
JobCounts.job_bytes): exact whichever way a job is inserted, changed or deleted, and counted once
per statement, not once per job, so that a statement inserting or deleting many jobs updates each
owner's count row once."""
from __future__ import annotations

import pytest
from django.db import connection

from core.models import Client
from core.services import client_create
from jobs import sql, transitions
from jobs.models import Job, JobCounts

pytestmark = pytest.mark.django_db

S = Job.Status
HELLO = "api.tasks.hello_world"


def job_bytes(owner: Client) -> int:
    return JobCounts.objects.get(owner=owner).job_bytes


def counted(owner: Client) -> int:
    return sql.owner_counts_counted(owner.pk)[3]


def count_row_updates() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT n_tup_upd FROM pg_stat_xact_user_tables WHERE relname = 'jobs_jobcounts'")
        (updates,) = cursor.fetchone()
    return int(updates)


def test_a_statement_inserting_many_finished_jobs_updates_each_owners_count_row_once() -> None:
    # Given two clients
    owners = [client_create(name=f"seeded-{i}") for i in range(2)]
    before = count_row_updates()

    # When one statement inserts 500 finished jobs of each (a seeding, a restore by INSERT)
    Job.objects.bulk_create([Job(owner=owner, job_name=HELLO, payload={"n": n}, metadata={"tier": "gold"},
                                 status=S.SUCCESS) for owner in owners for n in range(500)])

    # Then each owner's count row was updated once, holding all of their bytes: once a job, in one
    # transaction, each update walked every version the earlier ones left (a million finished jobs
    # seeded in 8 minutes where they took one)
    assert count_row_updates() - before == 2
    assert [job_bytes(owner) for owner in owners] == [counted(owner) for owner in owners]
    assert job_bytes(owners[0]) > 500 * len('{"n": 0}{"tier": "gold"}')


@pytest.mark.parametrize("status", [S.SUCCESS, S.PENDING, S.STARTED])
def test_a_statement_deleting_many_jobs_updates_each_owners_count_row_once(status: str) -> None:
    # Given two clients with finished, queued or running jobs
    owners = [client_create(name=f"pruned-{i}") for i in range(2)]
    Job.objects.bulk_create([Job(owner=owner, job_name=HELLO, payload={"n": n}, status=status)
                             for owner in owners for n in range(300)])
    before = count_row_updates()

    # When one statement deletes them (a batch of the prune, a client's deletion)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM jobs_job WHERE owner_id = ANY(%s)", [[owner.pk for owner in owners]])

    # Then each owner's row was updated once (an unfinished job's counts were taken once per job,
    # as the results' bytes were: jobs 0023), and holds nothing
    assert count_row_updates() - before == 2
    assert [sql.owner_counts_counted(owner.pk) for owner in owners] == [(0, 0, 0, 0)] * 2
    assert [JobCounts.objects.filter(owner=owner).values_list("unfinished", "running", "result_bytes", "job_bytes")
            .get() for owner in owners] == [(0, 0, 0, 0)] * 2


def test_the_bytes_follow_a_job_moved_changed_or_deleted_and_not_its_transitions() -> None:
    # Given a client with a job of 24 bytes, and another client
    owner, other = client_create(name="owner"), client_create(name="other")
    job = Job.objects.create(owner=owner, job_name=HELLO, payload={"message": "hi"}, metadata={"a": "b"})
    assert job_bytes(owner) == counted(owner) == len('{"message": "hi"}') + len('{"a": "b"}')

    # When it runs and finishes, its bytes stay
    transitions.job_start(job_id=job.id)
    transitions.job_finish(job_id=job.id, status=S.SUCCESS, result={"big": "x" * 100})
    assert job_bytes(owner) == counted(owner) == 27

    # ... its payload and metadata changed by hand (the admin can) are counted again
    Job.objects.filter(pk=job.pk).update(payload={"message": "x" * 50}, metadata={})
    assert job_bytes(owner) == counted(owner) == len('{"message": "' + "x" * 50 + '"}') + 2

    # ... moved to another client, its bytes move with it
    Job.objects.filter(pk=job.pk).update(owner=other)
    assert (job_bytes(owner), job_bytes(other)) == (0, counted(other)) and counted(other) > 50

    # ... and deleted, they go
    Job.objects.filter(pk=job.pk).delete()
    assert (job_bytes(owner), job_bytes(other)) == (0, 0)


def test_a_submission_refused_at_the_cap_counts_nothing() -> None:
    # Given a client at its cap of one unfinished job
    owner = client_create(name="capped")
    first = Job(owner=owner, job_name=HELLO, payload={"n": 1})
    assert sql.job_insert_below_cap(first, cap=1)
    held = job_bytes(owner)

    # When its next INSERT inserts nothing (the statement's trigger runs with no rows)
    assert not sql.job_insert_below_cap(Job(owner=owner, job_name=HELLO, payload={"n": 2}), cap=1)

    # Then its bytes are its one job's
    assert job_bytes(owner) == held == counted(owner) > 0
