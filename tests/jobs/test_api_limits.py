"""Per-client limits: a submission rate (429 with Retry-After) and a cap on unfinished jobs."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jobs.models import Job
from tests.conftest import Api

BODY = {"job_name": "api.tasks.hello_world"}


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
    Job.objects.bulk_create(Job(owner=api.client, job_name=BODY["job_name"]) for _ in range(2))

    response = api.post("/api/jobs/", json=BODY)

    assert response.status_code == 429
    assert response.json()["error"]["code"] == "too_many_unfinished_jobs"
    assert "Retry-After" in response.headers
    Job.objects.filter(owner=api.client).update(status="SUCCESS")
    assert api.post("/api/jobs/", json=BODY).status_code == 202
