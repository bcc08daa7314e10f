"""Per-client limits: a submission rate (429 with Retry-After) and a cap on unfinished jobs."""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from core.services import client_create
from jobs import dispatch, submission, transitions
from jobs.models import Job, JobCounts, JobResult
from jobs.submission import SubmissionRequest
from tests.conftest import Api
from tests.locks import rows_held

BODY = {"job_name": "api.tasks.hello_world"}
SAVE = "api.tasks.save_task_result_test_task"


def test_submissions_over_the_rate_get_429_with_retry_after(make_api: Callable[..., Api], settings: Any) -> None:
    settings.API_SUBMIT_RATE_PER_MINUTE = 3
    api, other = make_api(), make_api()

    statuses = [api.post("/api/jobs/", json=BODY).status_code for _ in range(4)]
    limited = api.post("/api/jobs/", json=BODY)

    assert statuses == [202, 202, 202, 429]
    assert limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) > 0
    assert Job.objects.filter(owner=api.client).count() == 3
    # Polling is not limited, and other clients have their own budget.
    assert api.get("/api/jobs/").status_code == 200
    assert other.post("/api/jobs/", json=BODY).status_code == 202


def test_unfinished_jobs_are_capped_per_client(make_api: Callable[..., Api], settings: Any) -> None:
    settings.JOB_MAX_UNFINISHED_PER_CLIENT = 2
    api = make_api()
    # Two unfinished jobs, claimed for dispatch as a submission leaves them: the suite's beat sweeps
    # committed jobs left unclaimed, and its worker would finish them under the cap's check
    Job.objects.bulk_create(Job(owner=api.client, job_name=BODY["job_name"], dispatched_at=timezone.now())
                            for _ in range(2))

    response = api.post("/api/jobs/", json=BODY)

    assert response.status_code == 429
    assert response.json()["error"]["code"] == "too_many_unfinished_jobs"
    assert "Retry-After" in response.headers
    Job.objects.filter(owner=api.client).update(status="SUCCESS")
    assert api.post("/api/jobs/", json=BODY).status_code == 202


def test_a_new_clients_first_submissions_at_once_are_capped_too(
    make_api: Callable[..., Api], settings: Any, two_turns: None
) -> None:
    # Given a new client, with a cap of one unfinished job
    settings.JOB_MAX_UNFINISHED_PER_CLIENT = 1
    api = make_api()

    # When its first two submissions run at once (held, after their cap check, until both wait)
    with ThreadPoolExecutor(2) as pool:
        with rows_held(f"SELECT 1 FROM core_client WHERE id = '{api.client.pk}' FOR UPDATE") as blocked:
            futures = [pool.submit(api.post, "/api/jobs/", json=BODY) for _ in range(2)]
            blocked(2)
        statuses = sorted(future.result(timeout=30).status_code for future in futures)

    # Then one is accepted and the other refused: its count row was there to lock from the start
    assert statuses == [202, 429]
    assert Job.objects.filter(owner=api.client).count() == 1


def test_a_payload_over_its_job_types_limit_gets_413(make_api: Callable[..., Api]) -> None:
    api = make_api()

    response = api.post("/api/jobs/", json={**BODY, "payload": {"message": "x" * (64 * 1024)}})

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert response.json()["error"]["details"]["max_payload_bytes"] == 64 * 1024
    assert not Job.objects.filter(owner=api.client).exists()


def test_a_payload_is_measured_as_stored_with_its_numbers_written_out(make_api: Callable[..., Api]) -> None:
    # jsonb writes 1e308 as its 309 digits (and 1e-300 as 302 characters): 300 of them are 1.8 KB
    # in the body and 93 KB in every read of the job, its events and webhooks.
    api = make_api()
    body = f'{{"job_name": "{SAVE}", "payload": {{"n": [{", ".join(["1e308", "-1e-300"] * 150)}]}}}}'

    response = api.post("/api/jobs/", data=body.encode(), headers={"Content-Type": "application/json"})

    assert len(body) < 4096
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "payload_too_large"
    assert response.json()["error"]["details"]["payload_bytes"] > 64 * 1024
    assert not Job.objects.filter(owner=api.client).exists()


def test_a_type_may_declare_a_larger_payload_limit(make_api: Callable[..., Api], fake_openai: Any) -> None:
    # The checklist's guidelines may be 100,000 characters: past the default 64 KiB.
    api = make_api()
    guidelines = "Every step is written down. " * 3500

    response = api.post("/api/jobs/", json={"job_name": "api.tasks.generate_checklist_from_guidelines",
                                             "payload": {"guidelines": guidelines}})

    assert response.status_code == 202, response.text
    api.post(f"/api/jobs/{response.json()['id']}/cancel/")


def test_persisted_results_over_the_quota_refuse_jobs_that_persist(
    make_api: Callable[..., Api], settings: Any, celery_worker: str
) -> None:
    # Given a client whose persisted results reach its quota
    settings.JOB_RESULT_QUOTA_BYTES_PER_CLIENT = 100
    api = make_api()
    saved = api.submit("api.tasks.save_task_result_test_task", {"text": "x" * 200})
    assert api.wait(saved["id"])["status"] == "SUCCESS"

    # When it submits another job that persists its result, and one that does not
    refused = api.post("/api/jobs/", json={"job_name": "api.tasks.save_task_result_test_task", "payload": {}})
    accepted = api.post("/api/jobs/", json=BODY)

    # Then the first is refused with a clear code, the second accepted
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "result_quota_exceeded"
    assert refused.json()["error"]["details"]["quota_bytes"] == 100
    assert "Retry-After" in refused.headers
    assert accepted.status_code == 202


def test_the_results_quota_refusal_says_when_the_oldest_result_goes(
    make_api: Callable[..., Api], settings: Any
) -> None:
    # Given a client at its results quota, its oldest result 28 days old, kept 30, the prune
    # running hourly
    settings.JOB_RESULT_QUOTA_BYTES_PER_CLIENT = 100
    settings.JOB_RESULT_RETENTION_DAYS = 30
    settings.HOUSEKEEPING_INTERVAL_SECONDS = 3600
    api = make_api()
    for days_ago in (28, 1):
        JobResult.objects.create(owner=api.client, task_name=SAVE, result={"text": "x" * 200},
                                 created_at=timezone.now() - timedelta(days=days_ago))

    # When it submits a job that persists its result
    refused = api.post("/api/jobs/", json={"job_name": SAVE, "payload": {}})

    # Then it is told to come back once the oldest has passed its retention and the prune after
    # that has run, two days and an hour from now: not in an hour, to be refused again
    assert (refused.status_code, refused.json()["error"]["code"]) == (429, "result_quota_exceeded")
    expected = (timedelta(days=2) + timedelta(hours=1)).total_seconds()
    assert expected - 60 <= int(refused.headers["Retry-After"]) <= expected, refused.headers
    assert "kept 30 days" in refused.json()["error"]["message"]


@pytest.mark.django_db(transaction=True)
def test_jobs_accepted_under_the_results_quota_do_not_start_once_it_is_reached(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a client under its results quota with three jobs accepted that persist their result,
    # and one that does not (nothing here reaches the suite's worker: publishing is off)
    settings.JOB_RESULT_QUOTA_BYTES_PER_CLIENT = 100
    monkeypatch.setattr(dispatch, "job_publish", lambda *, job, countdown=None: None)
    owner = client_create(name="quota-at-start")
    jobs = [
        submission.job_submit(owner=owner, request=SubmissionRequest(job_name=SAVE, payload={"text": "x" * 200}))[0]
        for _ in range(3)
    ]
    hello = submission.job_submit(owner=owner, request=SubmissionRequest(job_name=BODY["job_name"]))[0]

    # When the first runs and its result takes the client past the quota
    transitions.job_start(job_id=jobs[0].id)
    transitions.job_finish(job_id=jobs[0].id, status=Job.Status.SUCCESS, result={"text": "x" * 200})

    # Then the other two do not start (they would each add to the results): they fail, saying
    # why; the job that persists nothing starts
    assert transitions.job_start(job_id=jobs[1].id) is None
    refused = Job.objects.get(pk=jobs[1].pk)
    assert (refused.status, refused.error["type"]) == (Job.Status.FAILURE, "result_quota_exceeded")
    assert transitions.job_start(job_id=hello.id) is not None
    assert JobResult.objects.filter(owner=owner).count() == 1
    assert JobCounts.objects.get(owner=owner).unfinished == 2  # the hello job and jobs[2]
