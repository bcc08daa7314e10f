"""`GET /api/limits/`: a client sees the limits it is held to (the operator's overrides, or the
settings) and its own usage of them, over HTTP."""
from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client as DjangoClient

from core.services import api_key_create, client_create
from jobs.model_budget import model_usage_record
from tests.conftest import Api
from webhooks.endpoints import endpoint_create

RECEIVER = "http://127.0.0.1:9/hooks"
HELLO = {"job_name": "api.tasks.hello_world", "payload": {"message": "limits"}}
SAVE = {"job_name": "api.tasks.save_task_result_test_task", "payload": {"message": "kept"}}
# auth (key + client in one join) and the usage (the counts row, with the day's model usage
# and the endpoints' count as subqueries); a client with endpoints, one more: their backlogs.
LIMITS_MAX_QUERIES = 2


def limits(api: Api) -> dict[str, Any]:
    response = api.get("/api/limits/")
    assert response.status_code == 200, response.text
    return response.json()


def test_a_new_client_sees_the_settings_and_no_usage(make_api: Callable[..., Api], settings: Any) -> None:
    api = make_api()

    body = limits(api)

    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    assert body == {
        "submissions_per_minute": {"limit": settings.API_SUBMIT_RATE_PER_MINUTE},
        "reads_per_minute": {"limit": settings.API_READ_RATE_PER_MINUTE},
        "writes_per_minute": {"limit": settings.API_WRITE_RATE_PER_MINUTE},
        "sensitive_writes_per_minute": {"limit": settings.API_SENSITIVE_RATE_PER_MINUTE},
        "unfinished_jobs": {"limit": settings.JOB_MAX_UNFINISHED_PER_CLIENT, "used": 0},
        "running_jobs": {"limit": settings.JOB_MAX_RUNNING_PER_CLIENT, "used": 0},
        "result_bytes": {"limit": settings.JOB_RESULT_QUOTA_BYTES_PER_CLIENT, "used": 0},
        "job_bytes": {"limit": settings.JOB_PAYLOAD_QUOTA_BYTES_PER_CLIENT, "used": 0},
        "model_tokens_today": {
            "limit": settings.MODEL_TOKENS_PER_CLIENT_PER_DAY, "used": 0,
            "renews_at": f"{tomorrow.isoformat()}T00:00:00Z",
        },
        "webhook_endpoints": {"limit": settings.WEBHOOK_MAX_ENDPOINTS_PER_CLIENT, "used": 0},
        "webhook_backlog": {"limit": settings.WEBHOOK_MAX_BACKLOG_PER_ENDPOINT, "used": 0, "endpoints": []},
        "waits_and_streams_per_process": {"limit": settings.API_MAX_WAITERS_PER_CLIENT, "used": 0},
    }


def test_the_operators_overrides_show_and_a_0_shows_no_limit(
    make_api: Callable[..., Api], settings: Any
) -> None:
    # Given a client the operator gave its own limits (two of them lifted), and a setting of 0
    api = make_api()
    api.client.submit_rate_per_minute = 20_000
    api.client.max_unfinished_jobs = 50
    api.client.read_rate_per_minute = 0
    api.client.model_tokens_per_day = 0
    api.client.save()
    settings.JOB_RESULT_QUOTA_BYTES_PER_CLIENT = 0
    settings.API_SENSITIVE_RATE_PER_MINUTE = 5

    body = limits(api)

    assert body["submissions_per_minute"] == {"limit": 20_000}
    assert body["unfinished_jobs"]["limit"] == 50
    assert body["reads_per_minute"] == {"limit": None}
    assert body["model_tokens_today"]["limit"] is None
    assert body["result_bytes"]["limit"] is None
    assert body["sensitive_writes_per_minute"] == {"limit": 5}
    # Another client keeps the settings.
    assert limits(make_api())["unfinished_jobs"]["limit"] == settings.JOB_MAX_UNFINISHED_PER_CLIENT


def test_usage_moves_with_submissions_finished_jobs_tokens_and_endpoints(
    api: Api, make_api: Callable[..., Api]
) -> None:
    # Given another client with usage of its own, which must never show in this one's
    other = make_api()
    other.wait(other.submit(**SAVE)["id"])
    other.submit(**HELLO, run_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat())
    model_usage_record(owner_id=other.client.pk, tokens=999)
    assert other.post("/api/webhook-endpoints/", json={"url": RECEIVER}).status_code == 201
    assert {name: limit.get("used", 0) for name, limit in limits(api).items()} == dict.fromkeys(limits(api), 0)

    # A job scheduled an hour ahead is unfinished until canceled
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    job = api.submit(**HELLO, run_at=later)
    assert limits(api)["unfinished_jobs"]["used"] == 1
    assert api.post(f"/api/jobs/{job['id']}/cancel/").status_code == 202
    assert limits(api)["unfinished_jobs"]["used"] == 0

    # A job that persists its result: unfinished while it runs, its result's bytes once done
    api.wait(api.submit(**SAVE)["id"])
    body = limits(api)
    assert body["unfinished_jobs"]["used"] == 0
    assert body["result_bytes"]["used"] > 0

    # Model tokens of today count, yesterday's do not; endpoints count as registered
    model_usage_record(owner_id=api.client.pk, tokens=579)
    model_usage_record(owner_id=api.client.pk, tokens=10_000, now=datetime.now(UTC) - timedelta(days=1))
    for _ in range(2):
        assert api.post("/api/webhook-endpoints/", json={"url": RECEIVER}).status_code == 201
    body = limits(api)
    assert body["model_tokens_today"]["used"] == 579
    assert body["webhook_endpoints"]["used"] == 2

    other_body = limits(other)
    assert other_body["unfinished_jobs"]["used"] == 1
    assert other_body["result_bytes"]["used"] > 0
    assert other_body["model_tokens_today"]["used"] == 999
    assert other_body["webhook_endpoints"]["used"] == 1


def test_without_a_key_it_is_401(anonymous: Api) -> None:
    response = anonymous.get("/api/limits/")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_it_spends_the_read_budget(make_api: Callable[..., Api]) -> None:
    api = make_api()
    api.client.read_rate_per_minute = 2
    api.client.save()

    statuses = [api.get("/api/limits/").status_code for _ in range(3)]

    assert statuses == [200, 200, 429]


@pytest.mark.parametrize("endpoints", [0, 3])
def test_it_takes_a_fixed_few_queries(
    transactional_db: Any, django_assert_max_num_queries: Callable[..., Any], endpoints: int
) -> None:
    client = client_create(name="limits-queries")
    for _ in range(endpoints):
        endpoint_create(owner_id=client.pk, url=RECEIVER, rate_limit_per_second=0.01)
    http = DjangoClient(HTTP_AUTHORIZATION=f"Bearer {api_key_create(client=client)}")
    http.get("/api/limits/")  # first use: connection set-up is not a per-request cost

    with django_assert_max_num_queries(LIMITS_MAX_QUERIES + bool(endpoints)):
        response = http.get("/api/limits/")

    assert response.status_code == 200, response.content
