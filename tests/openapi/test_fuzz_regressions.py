"""Bugs the schemathesis run found, pinned as plain HTTP tests."""
from __future__ import annotations

import pytest

from tests.conftest import Api


@pytest.mark.parametrize(
    "created_after",
    [
        "0236-03-27T15:29:43.7-16:09",  # a UTC offset PostgreSQL refuses (was a 500)
        "2026-01-01T00:00:00+23:59",
    ],
)
def test_list_filter_accepts_any_iso_offset(make_api, created_after: str) -> None:
    api: Api = make_api()

    response = api.get("/api/jobs/", params={"created_after": created_after})

    assert response.status_code == 200, response.text
    assert response.json()["results"] == []


@pytest.mark.parametrize("created_before", ["0001-01-01T00:00:00+10:00", "9999-12-31T23:59:59-10:00"])
def test_list_filter_refuses_times_outside_the_representable_years(
    make_api, created_before: str
) -> None:
    api: Api = make_api()

    response = api.get("/api/jobs/", params={"created_before": created_before})

    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_filter"


@pytest.mark.parametrize(
    "body",
    [
        '{"job_name": "api.tasks.save_task_result_test_task", "payload": {"\\u0000[m": {}}}',
        '{"job_name": "api.tasks.save_task_result_test_task", "payload": {"k": "a\\u0000b"}}',
    ],
)
def test_submission_with_a_nul_character_is_a_400_and_creates_nothing(make_api, body: str) -> None:
    # PostgreSQL's jsonb cannot store U+0000: this was a 500 when the job row was written.
    api: Api = make_api()

    response = api.post("/api/jobs/", data=body, headers={"Content-Type": "application/json"})

    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_json"
    assert api.get("/api/jobs/").json()["results"] == []


def test_a_literal_backslash_u0000_text_is_still_accepted(api: Api) -> None:
    body = '{"job_name": "api.tasks.save_task_result_test_task", "payload": {"k": "\\\\u0000"}}'

    response = api.post("/api/jobs/", data=body, headers={"Content-Type": "application/json"})

    assert response.status_code == 202, response.text
    assert response.json()["payload"] == {"k": "\\u0000"}
