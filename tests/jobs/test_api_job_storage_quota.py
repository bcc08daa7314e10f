"""The job storage quota: the bytes a client's stored jobs' payloads and metadata hold, finished
ones too until retention prunes them, so that one client's greedy submissions fill its own
quota (429 `job_storage_quota_exceeded`), not the shared database (503 `storage_full` for all)."""
from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from io import StringIO
from typing import Any

from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from jobs import retention
from jobs.models import Job, JobCounts
from tests.conftest import Api

HELLO = "api.tasks.hello_world"
# About 520 bytes stored a job: two fit under a quota of 1,000, the second passing it.
BIG = {"job_name": HELLO, "payload": {"message": "x" * 500}}


def _finished(api: Api, *, days_ago: float) -> None:
    at = timezone.now() - timedelta(days=days_ago)
    Job.objects.create(owner=api.client, job_name=HELLO, payload={"message": "x" * 500}, status=Job.Status.SUCCESS,
                       created_at=at, finished_at=at)


def test_submissions_past_the_quota_are_refused_and_other_clients_are_not(
    make_api: Callable[..., Api], settings: Any
) -> None:
    # Given a quota of 1,000 bytes, and a client whose two jobs took it past it
    settings.JOB_PAYLOAD_QUOTA_BYTES_PER_CLIENT = 1000
    api, other = make_api(), make_api()
    assert [api.post("/api/jobs/", json=BIG).status_code for _ in range(2)] == [202, 202]
    used = JobCounts.objects.get(owner=api.client).job_bytes
    assert used > 1000

    # When it submits one more job, and a batch
    refused = api.post("/api/jobs/", json={"job_name": HELLO})
    batch = api.post("/api/jobs/batch/", json={"jobs": [{"job_name": HELLO}, {"job_name": HELLO}]})

    # Then both are refused, saying how much it holds of how much, and when to come back
    assert (refused.status_code, refused.json()["error"]["code"]) == (429, "job_storage_quota_exceeded")
    assert refused.json()["error"]["details"] == {"job_bytes": used, "quota_bytes": 1000}
    assert int(refused.headers["Retry-After"]) > 0
    assert (batch.status_code, batch.json()["error"]["code"]) == (429, "job_storage_quota_exceeded")
    assert Job.objects.filter(owner=api.client).count() == 2
    # ... GET /api/limits/ shows it beside the results quota, and another client submits
    assert api.get("/api/limits/").json()["job_bytes"] == {"limit": 1000, "used": used}
    assert other.post("/api/jobs/", json=BIG).status_code == 202
    assert other.get("/api/limits/").json()["job_bytes"]["used"] < 1000


def test_a_batch_counts_every_job_it_holds(make_api: Callable[..., Api], settings: Any) -> None:
    # Given a quota of 1,000 bytes, and a client that submitted a batch of three big jobs under it
    settings.JOB_PAYLOAD_QUOTA_BYTES_PER_CLIENT = 1000
    api = make_api()
    assert api.post("/api/jobs/batch/", json={"jobs": [BIG] * 3}).status_code == 202, "accepted: it was at 0"

    # When it submits another batch
    refused = api.post("/api/jobs/batch/", json={"jobs": [{"job_name": HELLO}]})

    # Then the three count, and the batch is refused whole
    assert (refused.status_code, refused.json()["error"]["code"]) == (429, "job_storage_quota_exceeded")
    assert refused.json()["error"]["details"]["job_bytes"] > 1500
    assert Job.objects.filter(owner=api.client).count() == 3


def test_the_refusal_says_when_the_oldest_finished_job_goes(make_api: Callable[..., Api], settings: Any) -> None:
    # Given a client at its quota with jobs that finished 28 days and a day ago, kept 30 days,
    # the prune running hourly
    settings.JOB_PAYLOAD_QUOTA_BYTES_PER_CLIENT = 1000
    settings.JOB_RETENTION_DAYS = 30
    settings.HOUSEKEEPING_INTERVAL_SECONDS = 3600
    api = make_api()
    for days_ago in (28, 1):
        _finished(api, days_ago=days_ago)

    # When it submits
    refused = api.post("/api/jobs/", json={"job_name": HELLO})

    # Then it is told to come back when the oldest is pruned: two days and an hour from now
    assert (refused.status_code, refused.json()["error"]["code"]) == (429, "job_storage_quota_exceeded")
    expected = (timedelta(days=2) + timedelta(hours=1)).total_seconds()
    assert expected - 60 <= int(refused.headers["Retry-After"]) <= expected, refused.headers
    assert "kept 30 days" in refused.json()["error"]["message"]


def test_a_client_with_no_finished_job_is_told_so(make_api: Callable[..., Api], settings: Any) -> None:
    # Given a client at its quota with two jobs, neither finished, kept 30 days once they are,
    # pruned hourly; each claimed for dispatch, as a submission leaves it (the suite's beat sweeps
    # a committed job left unclaimed, and its worker would finish it)
    settings.JOB_PAYLOAD_QUOTA_BYTES_PER_CLIENT = 1000
    settings.JOB_RETENTION_DAYS = 30
    settings.HOUSEKEEPING_INTERVAL_SECONDS = 3600
    api = make_api()
    for _ in range(2):
        Job.objects.create(owner=api.client, job_name=HELLO, payload={"message": "x" * 500},
                           status=Job.Status.PENDING, dispatched_at=timezone.now())

    # When it submits
    refused = api.post("/api/jobs/", json={"job_name": HELLO})

    # Then it is told that none has finished, not when an "oldest" goes, and to come back no
    # sooner than a job finishing now is pruned: 30 days and an hour
    error = refused.json()["error"]
    assert (refused.status_code, error["code"]) == (429, "job_storage_quota_exceeded")
    assert "all your stored jobs are unfinished" in error["message"], error["message"]
    assert "oldest" not in error["message"]
    expected = (timedelta(days=30) + timedelta(hours=1)).total_seconds()
    assert expected - 60 <= int(refused.headers["Retry-After"]) <= expected, refused.headers


def test_room_freed_by_the_prune_lets_the_client_submit_again(make_api: Callable[..., Api], settings: Any) -> None:
    # Given a client refused at its quota, its jobs finished 31 days ago, kept 30
    settings.JOB_PAYLOAD_QUOTA_BYTES_PER_CLIENT = 1000
    settings.JOB_RETENTION_DAYS = 30
    api = make_api()
    for _ in range(2):
        _finished(api, days_ago=31)
    assert api.post("/api/jobs/", json={"job_name": HELLO}).status_code == 429

    # When the housekeeping prunes what is past retention
    assert retention.jobs_retention_apply()["jobs"] == 2

    # Then the bytes they held are the client's again, and it submits
    assert api.get("/api/limits/").json()["job_bytes"]["used"] == 0
    assert api.post("/api/jobs/", json={"job_name": HELLO}).status_code == 202


def test_the_recount_counts_the_jobs_bytes_again(make_api: Callable[..., Api], settings: Any) -> None:
    # Given a client with a job, whose bytes a restore with its triggers off left at the quota
    settings.JOB_PAYLOAD_QUOTA_BYTES_PER_CLIENT = 1000
    api = make_api()
    assert api.post("/api/jobs/", json=BIG).status_code == 202
    kept = JobCounts.objects.get(owner=api.client).job_bytes
    with connection.cursor() as cursor:
        cursor.execute("UPDATE jobs_jobcounts SET job_bytes = 5000 WHERE owner_id = %s", [api.client.pk])
    assert api.post("/api/jobs/", json={"job_name": HELLO}).status_code == 429

    # When an operator counts its counts again
    out = StringIO()
    call_command("job_counts_recount", str(api.client.pk), stdout=out)

    # Then they are its rows' again, and it submits
    assert f"Client {api.client.pk}: its counts had drifted" in out.getvalue()
    assert JobCounts.objects.get(owner=api.client).job_bytes == kept > 500
    assert api.post("/api/jobs/", json={"job_name": HELLO}).status_code == 202
