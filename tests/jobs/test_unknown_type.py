"""Jobs of a type this code no longer registers (a deploy removed or renamed it while some were
queued, scheduled or running): they can never run here. They must not stop the sweeper from
publishing every other client's jobs, nor stay unfinished for good, holding their client's places
under its caps (with the default running cap of 1, its every later job waited behind one of them)."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client as DjangoClient
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core import pause
from core.pause import PauseAfterFailure
from core.services import api_key_create, client_create
from jobs import abandoned, dispatch
from jobs.models import Job, JobCounts
from tests.conftest import plan_of, plan_rows_read

# Each test in its transaction, out of the shared beat's sight: once a test of the suite has
# started the session worker, beat runs the sweeper and the abandoned-job rule every second, and
# with the rows committed, either could publish or fail this test's jobs between their commit and
# the test's own call, which then found nothing to do (the look's test failed so in 8 runs of
# 150 beside the worker, `assert 0 == 1`; alone, with no worker, they always passed). ANALYZE
# counts the transaction's own rows, so the look's plans are the ones of its backlog.
pytestmark = pytest.mark.django_db

RETIRED = "api.tasks.retired_in_a_deploy"


@pytest.fixture
def fresh_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's broker pause as a new process has it (none), and forgotten afterwards."""
    monkeypatch.setattr(pause, "broker", PauseAfterFailure(pause.BROKER_RETRY_SECONDS))


def test_waiting_jobs_of_an_unknown_type_do_not_hold_up_the_other_clients_jobs(
    queued_tasks: list[str], fresh_pause: None
) -> None:
    # Given a client's jobs of a type the deploy since removed, due first: one scheduled for
    # hours ago, one accepted minutes ago (a newer process may know its type: a deploy adding
    # it is under way); and another client's job waiting behind them (accepted as the broker
    # was down)
    now = timezone.now()
    owner = client_create(name="retired")
    long_due = Job.objects.create(owner=owner, job_name=RETIRED, created_at=now - timedelta(days=1),
                                  run_at=now - timedelta(seconds=settings.CELERY_BROKER_VISIBILITY_TIMEOUT_SECONDS + 61))
    lately_due = Job.objects.create(owner=owner, job_name=RETIRED, created_at=now - timedelta(minutes=5))
    other = Job.objects.create(owner=client_create(name="other"), job_name="api.tasks.hello_world",
                               created_at=now - timedelta(minutes=1))

    # When the sweeper runs
    published = dispatch.jobs_publish_waiting()

    # Then the other client's job is published, and the broker is not taken for down
    other.refresh_from_db()
    assert (published, other.dispatched_at is not None) == (1, True)
    assert queued_tasks == [dispatch.RUN_STEP_TASK]
    assert not pause.broker.paused()
    # ...while the jobs of the removed type wait unpublished: the one due long ago keeping its
    # claim, where the abandoned-job rule finds it; the other for the next sweep
    long_due.refresh_from_db()
    lately_due.refresh_from_db()
    assert (long_due.status, long_due.dispatched_at is not None) == (Job.Status.PENDING, True)
    assert (lately_due.status, lately_due.dispatched_at) == (Job.Status.PENDING, None)


def test_jobs_of_an_unknown_type_are_failed_once_no_worker_can_hold_them() -> None:
    # Given a client's jobs of a type the deploy since removed: one queued and one running since
    # before the broker's visibility timeout (an older worker that knew the type may have held
    # either until then), and one queued just now (an older worker may still take it)
    owner = client_create(name="retired-owner")
    http = DjangoClient(HTTP_AUTHORIZATION=f"Bearer {api_key_create(client=owner)}")
    held_until = timezone.now() - timedelta(seconds=settings.CELERY_BROKER_VISIBILITY_TIMEOUT_SECONDS + 61)
    queued = Job.objects.create(owner=owner, job_name=RETIRED, created_at=held_until, dispatched_at=held_until)
    running = Job.objects.create(owner=owner, job_name=RETIRED, created_at=held_until, status=Job.Status.STARTED,
                                 started_at=held_until)
    fresh = Job.objects.create(owner=owner, job_name=RETIRED, dispatched_at=timezone.now())

    # When the abandoned-job rule runs
    failed = abandoned.jobs_fail_abandoned()

    # Then the two older ones are failed saying why, each with its job.failed event, and their
    # places under the client's caps are free again; the fresh one is left for now
    assert failed == 2
    for job in (queued, running):
        seen = http.get(f"/api/jobs/{job.id}/").json()
        assert (seen["status"], seen["error"]["type"]) == ("FAILURE", "job_type_unknown"), seen
        assert RETIRED in seen["error"]["message"]
    assert http.get(f"/api/jobs/{fresh.id}/").json()["status"] == "PENDING"
    counts: Any = JobCounts.objects.get(owner=owner)
    assert (counts.unfinished, counts.running) == (1, 0)


def test_the_look_for_jobs_of_unknown_types_reads_none_of_the_jobs_waiting_for_dispatch() -> None:
    # Given a backlog of jobs accepted a day ago and waiting for dispatch (scheduled for
    # tomorrow: as many wait at a running cap), of known types and of the removed one, and one job
    # of the removed type handed to the broker a day ago
    owner = client_create(name="retired-beside-a-backlog")
    day_ago, tomorrow = timezone.now() - timedelta(days=1), timezone.now() + timedelta(days=1)
    Job.objects.bulk_create([
        Job(owner=owner, job_name=name, created_at=day_ago, run_at=tomorrow)
        for name in ("api.tasks.hello_world", RETIRED) for _ in range(150)
    ])
    Job.objects.create(owner=owner, job_name=RETIRED, created_at=day_ago, dispatched_at=day_ago)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE jobs_job")
    with CaptureQueriesContext(connection) as queries:
        assert abandoned.jobs_fail_abandoned() == 1
    looks = [query["sql"] for query in queries.captured_queries
             if query["sql"].startswith("SELECT") and 'NOT ("jobs_job"."job_name" IN' in query["sql"]]

    # When its looks are run again as they were, where the table is too small for PostgreSQL to
    # prefer an index on its own
    plans = [plan_of(look, analyze=True, seqscan=False) for look in looks]

    # Then they read the running jobs and those in the broker only: not one waiting job (each
    # look read in two parts, from a random key, then round from the lowest: core/rows_apart.py)
    assert len(plans) == 4, looks
    for plan in plans:
        assert plan_rows_read(plan, "jobs_job") <= 1, plan
