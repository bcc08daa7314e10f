"""The periodic rules that act on jobs one at a time, the abandoned-job rule (jobs.fail_abandoned)
and the deadline rule (jobs.enforce_deadlines), act on each apart: a job whose write raises (a
database error on its row, a bug in a hook) is logged and left, and the others are still failed
or canceled, run after run, however many raise (more than a run's page of them); the run ends as
having failed (core/rows_apart.py)."""
from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import DatabaseError, connection
from django.test import Client as DjangoClient
from django.utils import timezone

from core.models import Client
from core.rows_apart import RowsApart, RowsFailed
from core.services import api_key_create, client_create
from jobs import abandoned, deadlines
from jobs.models import Job
from jobs.registry import job_type_get
from tests.conftest import updates_refused

CHECKLIST = "api.tasks.generate_checklist_from_guidelines"


def _seen(owner: Client, job: Job) -> dict[str, Any]:
    http = DjangoClient(HTTP_AUTHORIZATION=f"Bearer {api_key_create(client=owner)}")
    return http.get(f"/api/jobs/{job.id}/").json()


def _refused_first(owner: Client, *, refused: int, others: int, **fields: Any) -> tuple[list[Job], list[Job]]:
    """`refused` jobs PostgreSQL refuses to update, made first and with the lowest ids (first in
    any order a rule could read them in), and `others` after them."""
    jobs = [Job.objects.create(id=uuid.UUID(int=n + 1) if n < refused else uuid.uuid4(), owner=owner,
                               job_name=CHECKLIST, **fields) for n in range(refused + others)]
    for n, job in enumerate(jobs[:refused]):
        updates_refused(job, name=f"test_row_refused_{n}")
    return jobs[:refused], jobs[refused:]


def _errors_about(caplog: pytest.LogCaptureFixture, job_id: uuid.UUID) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.ERROR and str(job_id) in r.getMessage()]


@pytest.mark.django_db
def test_a_stale_job_whose_finish_raises_leaves_the_others_failed(caplog: pytest.LogCaptureFixture) -> None:
    # Given six jobs whose worker vanished, one of which PostgreSQL refuses to update
    owner = client_create(name="abandoned-apart")
    job_type = job_type_get(CHECKLIST)
    limit = settings.CELERY_BROKER_VISIBILITY_TIMEOUT_SECONDS + len(job_type.steps) * job_type.time_limit_seconds + 60
    started = timezone.now() - timedelta(seconds=limit + 60)
    jobs = [Job.objects.create(owner=owner, job_name=CHECKLIST, status=Job.Status.STARTED, started_at=started,
                               dispatched_at=started) for _ in range(6)]
    refused, others = jobs[0], jobs[1:]
    updates_refused(refused)

    # When the rule runs, twice
    with pytest.raises(RowsFailed):
        abandoned.jobs_fail_abandoned()
    with pytest.raises(RowsFailed):
        abandoned.jobs_fail_abandoned()

    # Then every other job is failed, as its client sees it, and the refused one is left as it
    # was, named in one ERROR line (not one a run) with what it raised
    for job in others:
        seen = _seen(owner, job)
        assert (seen["status"], seen["error"]["type"]) == ("FAILURE", "worker_lost"), job.id
    assert _seen(owner, refused)["status"] == "STARTED"
    [line] = _errors_about(caplog, refused.id)
    assert "jobs.fail_abandoned" in line.getMessage() and line.exc_info
    assert "this row is refused" in str(line.exc_info[1])


@pytest.mark.django_db
def test_a_job_past_its_deadline_whose_cancel_raises_leaves_the_others_canceled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given six queued jobs past their deadline, one of which PostgreSQL refuses to update
    owner = client_create(name="deadline-apart")
    now = timezone.now()
    jobs = [Job.objects.create(owner=owner, job_name=CHECKLIST, dispatched_at=now,
                               deadline=now - timedelta(seconds=1)) for _ in range(6)]
    refused, others = jobs[0], jobs[1:]
    updates_refused(refused)

    # When the rule runs
    with pytest.raises(RowsFailed):
        deadlines.jobs_cancel_past_deadline()

    # Then every other job is canceled for its deadline, and the refused one is named in the log
    for job in others:
        seen = _seen(owner, job)
        assert (seen["status"], seen["error"]["type"]) == ("REVOKED", "deadline_exceeded"), job.id
    assert _seen(owner, refused)["status"] == "PENDING"
    [line] = _errors_about(caplog, refused.id)
    assert "jobs.enforce_deadlines" in line.getMessage()


@pytest.mark.django_db
def test_more_stale_jobs_whose_finish_raises_than_a_page_leave_the_others_failed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given stale jobs whose worker vanished: four PostgreSQL refuses to update, more than the
    # rule's page of three, first in every order, and five others
    owner = client_create(name="abandoned-pages")
    job_type = job_type_get(CHECKLIST)
    limit = settings.CELERY_BROKER_VISIBILITY_TIMEOUT_SECONDS + len(job_type.steps) * job_type.time_limit_seconds + 60
    started = timezone.now() - timedelta(seconds=limit + 60)
    refused, others = _refused_first(owner, refused=4, others=5, status=Job.Status.STARTED, started_at=started,
                                     dispatched_at=started)

    # When the rule runs once, three jobs a page
    with pytest.raises(RowsFailed):
        abandoned.jobs_fail_abandoned(page_rows=3)

    # Then every other job is failed, as its client sees it, and each refused one is left as it
    # was and named in the log
    for job in others:
        seen = _seen(owner, job)
        assert (seen["status"], seen["error"]["type"]) == ("FAILURE", "worker_lost"), job.id
    for job in refused:
        assert _seen(owner, job)["status"] == "STARTED"
        assert len(_errors_about(caplog, job.id)) == 1, job.id


@pytest.mark.django_db
def test_more_jobs_past_their_deadline_whose_cancel_raises_than_a_page_leave_the_others_canceled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given queued jobs past their deadline: four PostgreSQL refuses to update, more than the
    # rule's page of three, first in every order, and five others
    owner = client_create(name="deadline-pages")
    now = timezone.now()
    refused, others = _refused_first(owner, refused=4, others=5, dispatched_at=now,
                                     deadline=now - timedelta(seconds=1))

    # When the rule runs once, three jobs a page
    with pytest.raises(RowsFailed):
        deadlines.jobs_cancel_past_deadline(page_rows=3)

    # Then every other job is canceled for its deadline, and each refused one is named in the log
    for job in others:
        seen = _seen(owner, job)
        assert (seen["status"], seen["error"]["type"]) == ("REVOKED", "deadline_exceeded"), job.id
    for job in refused:
        assert _seen(owner, job)["status"] == "PENDING"
        assert len(_errors_about(caplog, job.id)) == 1, job.id


@pytest.mark.django_db
def test_a_run_reads_its_pages_in_key_order_from_its_start_round_to_the_lowest_key_up_to_its_bound() -> None:
    # Given seven jobs, all of whose actions raise
    owner = client_create(name="pages-bound")
    ids = sorted(Job.objects.create(owner=owner, job_name=CHECKLIST, dispatched_at=timezone.now()).pk
                 for _ in range(7))
    rows = Job.objects.filter(owner=owner).values_list("pk", flat=True)
    tried: list[uuid.UUID] = []

    def act(job_id: uuid.UUID) -> int:
        tried.append(job_id)
        raise ValueError("this job's action raises (the test)")

    # When a run reads them two a page from the lowest key, at most four; then one from the
    # fourth key, at most four, and one from there with no bound short of them all
    runs = [{"start": uuid.UUID(int=0), "most_rows": 4}, {"start": ids[3], "most_rows": 4},
            {"start": ids[3], "most_rows": 50}]
    tried_by_run = []
    for run in runs:
        tried.clear()
        RowsApart(task="jobs.fail_abandoned", what="job").pages(rows, act, page_rows=2, **run)
        tried_by_run.append(list(tried))

    # Then each tried its rows once, in key order from its start, round to the lowest key past the
    # highest, and stopped at its bound
    assert tried_by_run == [ids[:4], ids[3:7], ids[3:] + ids[:3]]


@pytest.mark.django_db(transaction=True)
def test_a_database_gone_mid_run_fails_the_run_once_not_each_row(caplog: pytest.LogCaptureFixture) -> None:
    # Given a run over five rows, whose first action finds PostgreSQL gone (its backend ended)
    acted = []

    def act(row: int) -> int:
        acted.append(row)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        return 1

    # When the run acts on them apart
    with pytest.raises(DatabaseError):
        RowsApart(task="jobs.fail_abandoned", what="job").each(range(5), act)
    connection.close()

    # Then it stops at the first, raising the database's error (the task fails once, as Celery
    # writes it), and writes no line for any row as though the row were the trouble
    assert acted == [0]
    assert [r for r in caplog.records if r.name == "core.rows_apart"] == []
