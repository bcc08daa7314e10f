"""A job whose stored `error`, `progress`, `metadata` or `webhook_events` is not the shape the code writes (written by hand in
SQL, by an older version, or by a job type's own code): every read of it answers the documented
shape, and the job can still be canceled. Each such row answered 500 to its job's GET, to every
list page holding it, and to its cancel (which was undone)."""
from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from examples.receiver import Receiver
from jobs.models import JobResult
from tests.conftest import Api

UNKNOWN = "unknown"
# What a job's callback receives when its submission names no webhook_events.
DEFAULT_EVENTS = ["job.succeeded", "job.failed", "job.canceled"]

# (column, stored JSON, what every read shows)
ODD_ROWS = [
    ("error", "boom", {"type": UNKNOWN, "message": "boom"}),
    ("error", ["a", 1], {"type": UNKNOWN, "message": '["a", 1]'}),
    ("error", {}, {"type": UNKNOWN, "message": ""}),
    ("error", {"type": 5}, {"type": "5", "message": ""}),
    ("error", {"type": "x", "message": {"deep": True}}, {"type": "x", "message": '{"deep": true}'}),
    ("error", {"type": "x", "message": "m" * 5000}, {"type": "x", "message": "m" * 2000}),
    ("progress", "half", None),
    ("progress", {"current": "x"}, None),
    ("progress", {"current": None, "total": None, "message": None}, None),
    ("progress", {"current": 1, "total": "many", "message": ""}, None),
    ("progress", {"current": "2", "total": 4.0}, {"current": 2, "total": 4, "message": ""}),
    ("progress", {"current": -1, "total": -5, "message": 3}, {"current": -1, "total": -5, "message": "3"}),
    ("metadata", ["a"], {}),
    ("metadata", {"k": 5, "n": None}, {"k": "5", "n": ""}),
    ("metadata", None, {}),
    ("webhook_events", None, DEFAULT_EVENTS),
    ("webhook_events", 5, DEFAULT_EVENTS),
    ("webhook_events", {"job.failed": True}, DEFAULT_EVENTS),
    ("webhook_events", [], DEFAULT_EVENTS),
    ("webhook_events", ["job.exploded", 7], DEFAULT_EVENTS),
    ("webhook_events", "job.failed", ["job.failed"]),
    ("webhook_events", ["job.failed", None, {"e": 1}, "job.nope", "job.started", "job.failed"],
     ["job.failed", "job.started"]),
]


def _stored(job_id: str, column: str, value: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE jobs_job SET {column} = %s::jsonb WHERE id = %s", [json.dumps(value), job_id])


def _stream_data(api: Api, job_id: str) -> list[dict[str, Any]]:
    """The `data` of each event a final job's stream sends before it ends."""
    response = api.get(f"/api/jobs/{job_id}/events/", headers={"Accept": "text/event-stream"}, stream=True)
    assert response.status_code == 200, response.text
    body = b"".join(response.iter_content(None)).decode()
    return [json.loads(line[len("data: "):]) for line in body.splitlines() if line.startswith("data: ")]


@pytest.mark.parametrize(("column", "stored", "shown"), ODD_ROWS, ids=lambda v: json.dumps(v)[:40])
def test_a_job_stored_in_an_odd_shape_reads_in_the_documented_one(
    make_api: Callable[..., Api], column: str, stored: Any, shown: Any
) -> None:
    # Given a client with two jobs (scheduled an hour ahead: no worker touches them), one of
    # whose `error`, `progress` or `metadata` was written in a shape the code never writes
    api = make_api()
    run_at = (timezone.now() + timedelta(hours=1)).isoformat()
    fine = api.submit("api.tasks.hello_world", run_at=run_at)
    odd = api.submit("api.tasks.hello_world", run_at=run_at)
    _stored(odd["id"], column, stored)

    # When the client reads it, its list, the legacy read, and cancels it
    detail = api.get(f"/api/jobs/{odd['id']}/")
    listed = api.get("/api/jobs/")
    legacy = api.get(f"/api/job/?job_id={odd['id']}")
    canceled = api.post(f"/api/jobs/{odd['id']}/cancel/")
    after = api.get(f"/api/jobs/{odd['id']}/")

    # Then each answers, the odd value shown in the documented shape
    assert detail.status_code == 200, detail.text
    assert detail.json()[column] == shown
    assert listed.status_code == 200, listed.text
    items = {item["id"]: item for item in listed.json()["results"]}
    assert set(items) == {fine["id"], odd["id"]} and items[odd["id"]][column] == shown
    assert legacy.status_code == 200 and legacy.json()["status"] == "PENDING", legacy.text
    # And the cancel took: the job is REVOKED, and its job.canceled event (the webhook's body, the
    # stream's) carries the same shape
    assert canceled.status_code == 202 and canceled.json()[column] == shown, canceled.text
    assert after.json()["status"] == "REVOKED" and after.json()[column] == shown
    events = _stream_data(api, odd["id"])
    assert events and events[-1]["type"] == "job.canceled" and events[-1]["data"][column] == shown, events


def test_a_running_job_stored_with_an_odd_error_still_reports_progress_and_succeeds(api: Api) -> None:
    # Given a job running on the worker (a tick of progress a second), whose row gets an error in
    # a shape the code never writes (an older version's, a hand-written fix)
    job = api.submit("api.tasks.long_running_task", {"duration": 3})
    api.wait(job["id"], until=lambda seen: seen["status"] == "STARTED")
    _stored(job["id"], "error", "old")

    # When it reports its next progress (each report records a job.progress event) and ends
    finished = api.wait(job["id"])

    # Then it succeeded, its last progress shown: its progress reports no longer failed it
    # (TypeError, recording their events)
    assert finished["status"] == "SUCCESS" and finished["error"] is None, finished
    assert finished["progress"] == {"current": 3, "total": 3, "message": "done"}, finished


def test_a_running_job_stored_with_odd_webhook_events_finishes_and_calls_back(api: Api) -> None:
    # Given a running job with a callback_url (the default events: the final ones), whose row
    # gets webhook_events that are no list of event types (a number)
    with Receiver() as receiver:
        job = api.submit("api.tasks.long_running_task", {"duration": 2}, callback_url=receiver.url)
        api.wait(job["id"], until=lambda seen: seen["status"] == "STARTED")
        _stored(job["id"], "webhook_events", 5)

        # When it ends
        finished = api.wait(job["id"])
        received = receiver.wait_for(1)

    # Then it succeeded, and its callback had its final event, as a job naming no events does:
    # recording the event raised TypeError (`in` a number) in the worker, and the job failed
    assert finished["status"] == "SUCCESS" and finished["webhook_events"] == DEFAULT_EVENTS, finished
    assert [r.event["type"] for r in received] == ["job.succeeded"]
    assert received[0].event["data"]["webhook_events"] == DEFAULT_EVENTS


def test_a_result_stored_as_json_null_lists_as_null_and_not_omitted(api: Api) -> None:
    # Given a job whose result, and a persisted result, hold JSON null (written by hand in SQL,
    # or by an older version; the code writes SQL NULL for no result)
    run_at = (timezone.now() + timedelta(hours=1)).isoformat()
    job = api.submit("api.tasks.hello_world", run_at=run_at)
    _stored(job["id"], "result", None)
    assert api.client is not None
    kept = JobResult.objects.create(owner=api.client, task_name="api.tasks.hello_world", result={"n": 1})
    with connection.cursor() as cursor:
        cursor.execute("UPDATE jobs_jobresult SET result = 'null'::jsonb WHERE id = %s", [kept.pk])

    # When the client lists its jobs and its results
    [listed_job] = api.get("/api/jobs/").json()["results"]
    [listed_result] = api.get("/api/results/").json()["results"]

    # Then each lists its result as its own URL shows it, null, and leaves nothing out: named in
    # `omitted`, the null read as a value too large for a list, which the item's URL does not hold
    assert listed_job["result"] is None and listed_job["omitted"] == [], listed_job
    assert api.get(f"/api/jobs/{job['id']}/").json()["result"] is None
    assert listed_result["result"] is None and listed_result["omitted"] == [], listed_result
    assert api.get(f"/api/results/{kept.pk}/").json()["result"] is None
