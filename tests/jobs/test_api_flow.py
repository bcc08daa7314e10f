"""The main flows end to end: HTTP -> PostgreSQL -> Redis -> a real worker -> poll."""
from __future__ import annotations

import time

from tests.conftest import Api


def test_hello_world_runs_to_success(api: Api) -> None:
    created = api.submit("api.tasks.hello_world", {"message": "there"})
    assert created["status"] == "PENDING"

    job = api.wait(created["id"])

    assert job["status"] == "SUCCESS"
    assert job["result"] == "hello world there"
    assert job["error"] is None
    assert job["started_at"] and job["finished_at"]


def test_submit_answers_202_with_location_and_the_job(api: Api) -> None:
    response = api.post("/api/jobs/", json={"job_name": "api.tasks.hello_world", "payload": {}})

    assert response.status_code == 202
    body = response.json()
    assert response.headers["Location"] == f"/api/jobs/{body['id']}/"
    assert set(body) >= {
        "id", "job_name", "status", "progress", "payload", "result", "error",
        "callback_url", "created_at", "started_at", "finished_at",
    }


def test_long_running_task_reports_progress_then_succeeds(api: Api) -> None:
    created = api.submit("api.tasks.long_running_task", {"duration": 2, "message": "m"})

    running = api.wait(created["id"], until=lambda job: job["progress"] is not None)
    assert running["status"] == "STARTED"
    assert running["progress"]["total"] == 2
    done = api.wait(created["id"])

    assert done["status"] == "SUCCESS"
    assert done["result"] == "Slept for 2 seconds. Message: m"
    assert done["progress"] == {"current": 2, "total": 2, "message": "done"}


def test_cancel_a_running_long_job(api: Api) -> None:
    created = api.submit("api.tasks.long_running_task", {"duration": 60})
    api.wait(created["id"], until=lambda job: job["status"] == "STARTED")

    started = time.monotonic()
    response = api.post(f"/api/jobs/{created['id']}/cancel/")
    assert response.status_code == 202
    job = api.wait(created["id"], timeout=10)

    assert job["status"] == "REVOKED"
    assert time.monotonic() - started < 5
    again = api.post(f"/api/jobs/{created['id']}/cancel/")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "job_already_final"


def test_save_result_job_persists_its_result(api: Api) -> None:
    payload = {"answer": 42, "nested": {"list": [1, 2]}}
    created = api.submit("api.tasks.save_task_result_test_task", payload)
    job = api.wait(created["id"])
    assert job["status"] == "SUCCESS"
    assert job["result"] == payload

    listed = api.get("/api/results/?task_name=api.tasks.save_task_result_test_task").json()

    assert listed["next"] is None and listed["previous"] is None
    [result] = listed["results"]
    assert result["job_id"] == created["id"]
    assert result["task_name"] == "api.tasks.save_task_result_test_task"
    assert result["result"] == payload
    # A list item is the result itself, and names what it leaves out (nothing, at this size).
    assert result.pop("omitted") == []
    assert api.get(f"/api/results/{result['id']}/").json() == result


def test_hello_world_does_not_persist_a_result(api: Api) -> None:
    api.wait(api.submit("api.tasks.hello_world")["id"])

    assert api.get("/api/results/").json()["results"] == []
