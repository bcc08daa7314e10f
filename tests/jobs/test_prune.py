"""Housekeeping: finished jobs, webhook logs and results go after their retention; nothing
unfinished, recent or still being delivered does."""
from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.models import Client
from core.services import client_create
from jobs import retention, tasks
from jobs.idempotency import idempotency_keys_prune
from jobs.models import IdempotencyKey, Job, JobResult, ModelUsage
from tests.conftest import plan_of
from webhooks import tasks as webhook_tasks
from webhooks.models import Delivery, DeliveryAttempt, Event

pytestmark = pytest.mark.django_db

S = Job.Status
NOW = timezone.now()
DAY = timedelta(days=1)


@pytest.fixture
def owner() -> Client:
    return client_create(name="pruned")


def _job(owner: Client, status: str, *, finished_days_ago: float | None, created_days_ago: float = 400) -> Job:
    created = NOW - created_days_ago * DAY
    finished = None if finished_days_ago is None else NOW - finished_days_ago * DAY
    return Job.objects.create(owner=owner, job_name="api.tasks.hello_world", status=status,
                              created_at=created, finished_at=finished, dispatched_at=created)


def _event(owner: Client, *, days_ago: float, state: str) -> Event:
    at = NOW - days_ago * DAY
    event = Event.objects.create(owner=owner, subject_id=uuid.uuid4(), event_type="job.succeeded",
                                 body=b"{}", created_at=at)
    delivery = Delivery.objects.create(event=event, owner=owner, subject_id=event.subject_id,
                                       url="https://hooks.example.com/", state=state, created_at=at)
    DeliveryAttempt.objects.create(delivery=delivery, number=1, started_at=at, status_code=500)
    return event


def _result(owner: Client, job: Job | None, *, days_ago: float) -> JobResult:
    return JobResult.objects.create(owner=owner, job=job, task_name="t", result=1,
                                    created_at=NOW - days_ago * DAY)


def test_housekeeping_prunes_what_is_past_retention_and_keeps_the_rest(
    owner: Client, settings: Any
) -> None:
    # Given retention of 30 days for jobs and webhook logs, 365 for results
    settings.JOB_RETENTION_DAYS = 30
    settings.WEBHOOK_EVENT_RETENTION_DAYS = 30
    settings.JOB_RESULT_RETENTION_DAYS = 365
    old_done = [_job(owner, status, finished_days_ago=31) for status in (S.SUCCESS, S.FAILURE, S.REVOKED)]
    recent_done = _job(owner, S.SUCCESS, finished_days_ago=29)
    old_running = _job(owner, S.STARTED, finished_days_ago=None)
    old_pending = _job(owner, S.PENDING, finished_days_ago=None)
    IdempotencyKey.objects.create(owner=owner, key="k", fingerprint="f", job=recent_done,
                                  created_at=NOW - 2 * DAY)
    result_of_old_job = _result(owner, old_done[0], days_ago=31)
    ancient_result = _result(owner, None, days_ago=366)
    old_event = _event(owner, days_ago=31, state=Delivery.State.SUCCEEDED)
    old_failed_event = _event(owner, days_ago=31, state=Delivery.State.FAILED)
    old_pending_event = _event(owner, days_ago=31, state=Delivery.State.PENDING)
    recent_event = _event(owner, days_ago=1, state=Delivery.State.SUCCEEDED)
    today = NOW.date()
    for days_ago in (0, retention.MODEL_USAGE_KEPT_DAYS, retention.MODEL_USAGE_KEPT_DAYS + 1):
        ModelUsage.objects.create(owner=owner, day=today - days_ago * DAY, tokens=100)

    # When the periodic tasks run
    counts = tasks.jobs_prune()
    events = webhook_tasks.webhooks_prune()

    # Then old finished jobs, old finished webhook logs, ancient results, expired keys and model
    # usage past its days are gone
    assert counts == {"jobs": 3, "results": 1, "idempotency_keys": 1, "model_usage": 1}
    assert sorted(ModelUsage.objects.values_list("day", flat=True)) == [
        today - retention.MODEL_USAGE_KEPT_DAYS * DAY, today
    ]
    assert events == {"events": 2, "signing_secrets": 0}
    remaining_jobs = set(Job.objects.values_list("pk", flat=True))
    assert remaining_jobs == {recent_done.pk, old_running.pk, old_pending.pk}
    # A result outlives its job.
    result_of_old_job.refresh_from_db()
    assert result_of_old_job.job is None
    assert not JobResult.objects.filter(pk=ancient_result.pk).exists()
    assert set(Event.objects.values_list("pk", flat=True)) == {old_pending_event.pk, recent_event.pk}
    assert not Delivery.objects.filter(event__in=[old_event, old_failed_event]).exists()
    assert DeliveryAttempt.objects.count() == 2
    assert not IdempotencyKey.objects.exists()


def test_prune_works_in_batches_and_stops_at_the_batch_cap(owner: Client) -> None:
    for _ in range(7):
        _job(owner, S.SUCCESS, finished_days_ago=100)
    cutoff: datetime = NOW - 30 * DAY

    first = retention.jobs_finished_prune(older_than=cutoff, batch_size=2, max_batches=2)
    rest = retention.jobs_finished_prune(older_than=cutoff, batch_size=2, max_batches=10)

    assert (first, rest) == (4, 3)
    assert not Job.objects.exists()



def test_a_run_stopped_at_its_cap_queues_the_next_until_nothing_past_retention_is_left(
    owner: Client, monkeypatch: pytest.MonkeyPatch, queued_tasks: list[str]
) -> None:
    # Given more finished jobs past their retention than one run deletes (here 2 batches of 2):
    # a service finishing more jobs an hour than beat's hourly run deletes
    monkeypatch.setattr(retention, "PRUNE_BATCH_SIZE", 2)
    monkeypatch.setattr(retention, "PRUNE_MAX_BATCHES", 2)
    for _ in range(9):
        _job(owner, S.SUCCESS, finished_days_ago=31)

    # When beat's run goes, then each run it queued (run here, in the test's transaction)
    runs = [tasks.jobs_prune()["jobs"]]
    while "jobs.prune" in queued_tasks:
        queued_tasks.remove("jobs.prune")
        runs.append(tasks.jobs_prune()["jobs"])

    # Then each run that stopped at its cap queued the next, and none of those jobs is left
    assert runs == [4, 4, 1]
    assert not Job.objects.exists()


def test_a_batch_reads_only_the_ids_of_the_jobs_and_events_it_deletes(owner: Client) -> None:
    # Given a finished job and a delivered event past their retention, with a payload and a body
    # of a megabyte
    job = _job(owner, S.SUCCESS, finished_days_ago=40)
    Job.objects.filter(pk=job.pk).update(payload={"text": "x" * 1_000_000}, result={"text": "y" * 1_000_000})
    event = _event(owner, days_ago=40, state=Delivery.State.SUCCEEDED)
    Event.objects.filter(pk=event.pk).update(body=b"z" * 1_000_000)

    # When the housekeeping prunes them
    with CaptureQueriesContext(connection) as queries:
        assert retention.jobs_retention_apply()["jobs"] == 1
        assert webhook_tasks.webhooks_prune()["events"] == 1

    # Then no statement read a job's payload or result, or an event's body: a batch of a
    # thousand such rows, read whole, was gigabytes in the worker
    read = [q["sql"][:200] for q in queries.captured_queries
            if q["sql"].startswith("SELECT") and any(column in q["sql"].split(" FROM ")[0] for column in (
                '"jobs_job"."payload"', '"jobs_job"."result"', '"webhooks_event"."body"'))]
    assert read == []


def test_the_prune_finds_old_results_and_keys_by_index_not_by_reading_the_table() -> None:
    # Given the planner told to avoid sequential scans (on a table of a few rows it reads the
    # table whatever the indexes; told so, it shows the index it would take on a big one)
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")

    # When the housekeeping looks for results and keys past their retention
    with CaptureQueriesContext(connection) as queries:
        retention.jobs_retention_apply()

    # Then each look goes by its created_at index (an owner-first one would be read whole)
    looks = {
        table: q["sql"] for q in queries.captured_queries for table in ("jobs_jobresult", "jobs_idempotencykey")
        if q["sql"].startswith(f'SELECT "{table}"."id"') and "LIMIT" in q["sql"]
    }
    plans = {table: plan_of(sql) for table, sql in looks.items()}
    scan = r"(?:Index Scan using|Bitmap Index Scan on) {}\b"
    assert re.search(scan.format("result_created"), plans["jobs_jobresult"]), plans
    assert re.search(scan.format("idempotency_created"), plans["jobs_idempotencykey"]), plans


def test_the_keys_prune_looks_for_the_oldest_keys_first() -> None:
    # When a batch looks for keys past their TTL
    with CaptureQueriesContext(connection) as queries:
        idempotency_keys_prune(older_than=NOW - DAY, max_batches=1)

    # Then it asks for them oldest first: PostgreSQL walks idempotency_created up to the cut-off.
    # Unordered, when it expects most keys to be due, it reads the table from its start instead,
    # all of it in a batch that finds fewer (docs/reliability.md, "Pruning at two million events").
    [look] = [q["sql"] for q in queries.captured_queries if "LIMIT" in q["sql"]]
    assert look.endswith('ORDER BY "jobs_idempotencykey"."created_at" ASC LIMIT 1000'), look


def test_results_retention_shorter_than_jobs_is_refused() -> None:
    import subprocess
    import sys

    from tests.conftest import REPO

    env = {"JOB_RETENTION_DAYS": "30", "JOB_RESULT_RETENTION_DAYS": "7", "SECRET_KEY": "x",
           "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/unused", "PATH": "/usr/bin:/bin"}
    code = "import django.conf; django.conf.settings.INSTALLED_APPS"
    env["DJANGO_SETTINGS_MODULE"] = "core.settings"
    check = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=60, check=False)
    assert check.returncode != 0
    assert "JOB_RESULT_RETENTION_DAYS must be >= JOB_RETENTION_DAYS" in check.stderr


def test_idempotency_keys_kept_longer_than_jobs_are_refused() -> None:
    # A key goes with its job (it cascades): kept past the job's pruning, a repeat would make the
    # job again.
    import subprocess
    import sys

    from tests.conftest import REPO

    env = {"JOB_RETENTION_DAYS": "1", "IDEMPOTENCY_KEY_TTL_SECONDS": str(2 * 24 * 3600), "SECRET_KEY": "x",
           "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/unused", "PATH": "/usr/bin:/bin",
           "DJANGO_SETTINGS_MODULE": "core.settings"}
    code = "import django.conf; django.conf.settings.INSTALLED_APPS"
    check = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=60, check=False)
    assert check.returncode != 0
    assert "IDEMPOTENCY_KEY_TTL_SECONDS must be at most JOB_RETENTION_DAYS" in check.stderr
