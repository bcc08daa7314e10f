"""List answers stay small whatever the jobs hold: a `payload` or `result` whose JSON is larger
than API_LIST_INLINE_MAX_BYTES is null in a list item and named in `omitted` (the item's own
URL has it whole), decided by PostgreSQL without sending the value; deliveries come at most
100 a page."""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.services import client_create
from jobs import selectors
from jobs.models import Job, JobResult
from tests.conftest import Api
from webhooks.models import Delivery, DeliveryAttempt, Event

SAVE = "api.tasks.save_task_result_test_task"


def text_bytes(value: Any) -> int:
    """The size of a value's JSON text as PostgreSQL writes jsonb (", " and ": ")."""
    return len(json.dumps(value, ensure_ascii=False).encode())


def test_a_large_payload_and_result_are_left_out_of_lists_and_whole_at_their_url(api: Api) -> None:
    # Given a job whose payload (and so its result, and its persisted result) is over 4 KiB
    big = {"blob": "é" * 3000}  # 6 KiB of UTF-8
    small = {"n": 1}
    big_job = api.wait(api.submit(SAVE, big)["id"])
    small_job = api.wait(api.submit(SAVE, small)["id"])

    # When the lists are read
    jobs = {job["id"]: job for job in api.get("/api/jobs/").json()["results"]}
    results = {item["job_id"]: item for item in api.get("/api/results/").json()["results"]}

    # Then the large values are null and named, the small ones are there
    assert jobs[big_job["id"]]["payload"] is None and jobs[big_job["id"]]["result"] is None
    assert jobs[big_job["id"]]["omitted"] == ["payload", "result"]
    assert jobs[small_job["id"]]["payload"] == small and jobs[small_job["id"]]["result"] == small
    assert jobs[small_job["id"]]["omitted"] == []
    assert results[big_job["id"]]["result"] is None
    assert results[big_job["id"]]["omitted"] == ["result"]
    assert results[small_job["id"]]["result"] == small and results[small_job["id"]]["omitted"] == []
    # ... and the job's own URL, and the result's, have them whole
    assert api.get(f"/api/jobs/{big_job['id']}/").json()["payload"] == big
    assert api.get(f"/api/jobs/{big_job['id']}/").json()["result"] == big
    assert api.get(f"/api/results/{results[big_job['id']]['id']}/").json()["result"] == big
    # ... and a list item is otherwise the job as its URL shows it
    listed = dict(jobs[small_job["id"]])
    assert listed.pop("omitted") == []
    assert listed == api.get(f"/api/jobs/{small_job['id']}/").json()


def test_a_result_not_there_yet_is_not_omitted(make_api: Callable[..., Api]) -> None:
    api = make_api()
    # Claimed for dispatch, as a submission leaves it: the suite's beat sweeps a committed job left
    # unclaimed, and its worker would give it a result
    Job.objects.create(owner=api.client, job_name=SAVE, payload={"big": "x" * 5000}, dispatched_at=timezone.now())

    [item] = api.get("/api/jobs/").json()["results"]

    assert item["result"] is None
    assert item["omitted"] == ["payload"]


@pytest.mark.parametrize(
    "value",
    [
        {"s": "x" * 300},
        [0] * 100,  # jsonb stores one-digit numbers at about 4 times their text
        {"k": "\x01" * 50},  # escaped in JSON text: 6 bytes each
        ["é€😀"] * 20,
    ],
    ids=["string", "digits", "control characters", "multi-byte"],
)
def test_the_limit_is_the_json_text_in_bytes(
    make_api: Callable[..., Api], settings: Any, value: Any
) -> None:
    api = make_api()
    Job.objects.create(owner=api.client, job_name=SAVE, payload=value, dispatched_at=timezone.now())
    size = text_bytes(value)

    settings.API_LIST_INLINE_MAX_BYTES = size
    at_the_limit = api.get("/api/jobs/").json()["results"][0]
    settings.API_LIST_INLINE_MAX_BYTES = size - 1
    one_byte_over = api.get("/api/jobs/").json()["results"][0]

    assert at_the_limit["payload"] == value and at_the_limit["omitted"] == []
    assert one_byte_over["payload"] is None and one_byte_over["omitted"] == ["payload"]


@pytest.mark.django_db
def test_the_database_sends_no_large_value() -> None:
    owner = client_create(name="lists")
    big = {"blob": "x" * 300_000}  # compresses to a few KiB: only its text says it is large
    job = Job.objects.create(owner=owner, job_name=SAVE, payload=big, result=big)
    JobResult.objects.create(owner=owner, job=job, task_name=SAVE, result=big)

    with CaptureQueriesContext(connection) as queries:
        [row] = list(selectors.job_list(owner=owner, inline_max_bytes=4096))
        [stored] = list(selectors.result_list(owner=owner, inline_max_bytes=4096))

    assert len(queries) == 2
    assert {"payload", "result"} <= row.get_deferred_fields()
    assert "result" in stored.get_deferred_fields()
    assert row.payload_inline is None and row.result_inline is None
    assert stored.result_inline is None


def test_deliveries_come_at_most_100_a_page(make_api: Callable[..., Api]) -> None:
    # Each delivery can carry one attempt per step of the retry schedule, each with up to 4 KiB
    # of the receiver's answer.
    api = make_api()
    job = Job.objects.create(owner=api.client, job_name=SAVE, status="SUCCESS")
    event = Event.objects.create(owner=api.client, subject_id=job.id, event_type="job.succeeded", body=b"{}")
    deliveries = Delivery.objects.bulk_create(
        Delivery(event=event, owner=api.client, subject_id=job.id, url="https://example.com/hook",
                 redelivery=True, state="failed", attempt_count=1)
        for _ in range(101)
    )
    DeliveryAttempt.objects.bulk_create(
        DeliveryAttempt(delivery=delivery, number=1, status_code=500, response_body="x" * 4096)
        for delivery in deliveries
    )

    page = api.get(f"/api/jobs/{job.id}/deliveries/", params={"page_size": 500}).json()
    rest = api.get(page["next"].replace(api.base_url, "")).json()

    assert len(page["results"]) == 100
    assert len(rest["results"]) == 1 and rest["next"] is None
    assert {d["id"] for d in page["results"] + rest["results"]} == {d.pk for d in deliveries}
