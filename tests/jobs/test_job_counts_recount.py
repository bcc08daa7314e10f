"""Repairing a client's counts (`manage.py job_counts_recount`): counts that drifted (a restore
with its triggers off left them so) lock the client out at its cap until they are counted again
from the rows; counting again beside the client's traffic leaves them exact."""
from __future__ import annotations

import threading
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client as DjangoClient
from django.utils import timezone

from core.models import Client
from core.services import api_key_create, client_create, client_delete
from jobs import sql, transitions
from jobs.counts import job_counts_recount
from jobs.models import Job, JobCounts, JobResult
from tests.conftest import script_output
from tests.locks import meanwhile

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = "api.tasks.hello_world"


# A job of HELLO's as these make it, with no payload and no metadata: `{}` and `{}`, 4 bytes.
HELLO_BYTES = 4


def _counts(owner_id: Any) -> tuple[int, int, int, int]:
    row = JobCounts.objects.get(owner_id=owner_id)
    return row.unfinished, row.running, row.result_bytes, row.job_bytes


def test_a_client_locked_out_by_counts_that_drifted_submits_again_once_they_are_counted_again(settings: Any) -> None:
    # Given a client with one unfinished job and one persisted result, whose counts a restore
    # with its triggers off left at its cap of unfinished jobs
    settings.JOB_MAX_UNFINISHED_PER_CLIENT = 2
    owner, other = client_create(name="drifted"), client_create(name="exact")
    http = DjangoClient(HTTP_AUTHORIZATION=f"Bearer {api_key_create(client=owner)}")
    Job.objects.create(owner=owner, job_name=HELLO, dispatched_at=timezone.now())
    JobResult.objects.create(owner=owner, task_name=HELLO, result={"message": "kept"})
    kept = _counts(owner.pk)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE jobs_jobcounts SET unfinished = 2, running = 1, result_bytes = 0, job_bytes = 0 "
                       "WHERE owner_id = %s",
                       [owner.pk])
    later = {"job_name": HELLO, "run_at": (timezone.now() + timedelta(hours=1)).isoformat()}
    refused = http.post("/api/jobs/", later, content_type="application/json")
    assert (refused.status_code, refused.json()["error"]["code"]) == (429, "too_many_unfinished_jobs")

    # When an operator counts every client's again
    out = StringIO()
    call_command("job_counts_recount", stdout=out)

    # Then the client's counts are its rows' again (the other client's untouched), and it submits
    assert f"Client {owner.pk}: its counts had drifted" in out.getvalue()
    assert "Checked 2 client(s); 1 had counts that drifted." in out.getvalue()
    assert _counts(owner.pk) == kept == (1, 0, kept[2], HELLO_BYTES) and kept[2] > 0
    assert _counts(other.pk) == (0, 0, 0, 0)
    assert http.post("/api/jobs/", later, content_type="application/json").status_code == 202



def test_a_client_whose_count_row_was_lost_submits_batches_again_once_counted_again() -> None:
    # Given a client with an unfinished job whose count row a TRUNCATE of the counts table lost
    owner = client_create(name="lost-row")
    http = DjangoClient(HTTP_AUTHORIZATION=f"Bearer {api_key_create(client=owner)}")
    Job.objects.create(owner=owner, job_name=HELLO, dispatched_at=timezone.now())
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE jobs_jobcounts")
    batch = {"jobs": [{"job_name": HELLO}]}

    # When an operator counts its counts again
    out = StringIO()
    call_command("job_counts_recount", str(owner.pk), stdout=out)

    # Then its row is back, as its rows count it, and its batches are taken again
    assert f"Client {owner.pk}: its counts had drifted" in out.getvalue()
    assert _counts(owner.pk) == (1, 0, 0, HELLO_BYTES)
    assert http.post("/api/jobs/batch/", batch, content_type="application/json").status_code == 202

def test_counting_again_beside_the_clients_transitions_leaves_the_counts_exact(settings: Any) -> None:
    # Given a client whose jobs are started and finished (each with a persisted result) by a worker
    settings.JOB_MAX_RUNNING_PER_CLIENT = 0
    owner = client_create(name="busy")
    jobs = Job.objects.bulk_create(Job(owner=owner, job_name="api.tasks.save_task_result_test_task",
                                       dispatched_at=timezone.now()) for _ in range(40))

    def worker() -> None:
        try:
            for job in jobs:
                transitions.job_start(job_id=job.id)
                transitions.job_finish(job_id=job.id, status=Job.Status.SUCCESS, result={"n": str(job.id)})
        finally:
            connection.close()

    # When an operator counts its counts again, over and over, meanwhile
    thread = threading.Thread(target=worker)
    thread.start()
    try:
        while thread.is_alive():
            job_counts_recount(owner_id=owner.pk)
    finally:
        thread.join()

    # Then they are what its rows say, as the triggers alone would have left them
    assert _counts(owner.pk) == sql.owner_counts_counted(owner.pk)
    assert _counts(owner.pk)[:2] == (0, 0)
    assert not job_counts_recount(owner_id=owner.pk)


def test_making_a_lost_count_row_again_beside_a_finishing_job_leaves_the_counts_exact() -> None:
    # Given a client with a running job, whose count row a TRUNCATE of the counts lost
    owner = client_create(name="lost-row-busy")
    job = Job.objects.create(owner=owner, job_name=HELLO, status=Job.Status.STARTED)
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE jobs_jobcounts")

    # When an operator counts its counts again, and the job finishes while they are counted
    def finish() -> bool:
        return transitions.job_finish(job_id=job.id, status=Job.Status.SUCCESS, result="done")

    with meanwhile(finish, at="SELECT (SELECT COUNT(*)") as finished:
        job_counts_recount(owner_id=owner.pk)

    # Then its row counts the job as finished, not running: made again uncommitted, the row was
    # invisible to the finish's trigger, whose decrement found no row and was lost, while the
    # count saw the job still running; the client had one running job fewer under its cap for
    # good (until counted again)
    assert finished == [True]
    assert _counts(owner.pk) == sql.owner_counts_counted(owner.pk) == (0, 0, 0, HELLO_BYTES)



def test_a_client_deleted_as_its_lost_count_row_is_made_again_is_passed_over() -> None:
    # Given two clients whose count rows a TRUNCATE of the counts lost
    gone, kept = client_create(name="lost-row-gone"), client_create(name="lost-row-kept")
    Job.objects.create(owner=kept, job_name=HELLO, dispatched_at=timezone.now())
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE jobs_jobcounts")

    # When an operator counts every client's again, and the first is deleted as its row is made
    def delete() -> None:
        client_delete(client=Client.objects.get(pk=gone.pk))

    out = StringIO()
    with meanwhile(delete, at='INSERT INTO "jobs_jobcounts"'):
        call_command("job_counts_recount", str(gone.pk), str(kept.pk), stdout=out)

    # Then the deleted one is passed over, and the other's row is made again
    assert not Client.objects.filter(pk=gone.pk).exists()
    assert "Checked 2 client(s); 1 had counts that drifted." in out.getvalue()
    assert _counts(kept.pk) == (1, 0, 0, HELLO_BYTES)

SQLITE_SCRIPT = """
import django
django.setup()
from django.core.management import CommandError, call_command
call_command("migrate", verbosity=0)
from core.services import client_create
from jobs.counts import job_counts_recount
from jobs.models import Job, JobCounts, JobResult
from tests.conftest import script_output
owner = client_create(name="embedded")
Job.objects.create(owner=owner, job_name="api.tasks.hello_world", status=Job.Status.STARTED)
JobResult.objects.create(owner=owner, task_name="t", result={"a": 1})
counts = ("unfinished", "running", "result_bytes", "job_bytes")
kept = list(JobCounts.objects.filter(owner=owner).values_list(*counts))
JobCounts.objects.filter(owner=owner).update(unfinished=9, running=9, result_bytes=9, job_bytes=9)
print([job_counts_recount(owner_id=owner.pk), kept == list(JobCounts.objects.filter(owner=owner).values_list(*counts)), kept])
"""


def test_counts_are_counted_again_on_sqlite_as_its_triggers_count_them(tmp_path: Path) -> None:
    # `make run`'s database: the results' and jobs' bytes are measured there as its triggers measure them
    out = script_output(SQLITE_SCRIPT, database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}", data_dir=tmp_path)

    assert out == "[True, True, [(1, 1, 8, 4)]]"


def test_a_mistyped_client_id_is_an_error_not_a_client_found_exact() -> None:
    # Given a client, and an id that is no client's (a typo)
    owner = client_create(name="real")
    typo = "00000000-0000-0000-0000-000000000001"

    # When the operator counts the clients named, the typo among them
    out = StringIO()
    with pytest.raises(CommandError, match=f"No client with the id\\(s\\) {typo}"):
        call_command("job_counts_recount", str(owner.pk), typo, stdout=out)

    # Then it says so, and fails (it said "Checked 1 client(s); 0 had counts that drifted")
    assert "Checked" not in out.getvalue()
