"""A resource's id in a path is a UUID in either case, as the query strings' ids are."""
from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from django.utils import timezone

from tests.conftest import Api

SAVE = "api.tasks.save_task_result_test_task"


def test_an_id_in_capitals_names_the_same_job_and_endpoint(make_api: Callable[..., Api]) -> None:
    # Given a job (scheduled an hour ahead: no worker ends it before its cancel) and a webhook
    # endpoint, their ids written in capitals (Swift's UUID.uuidString, .NET's "D" format
    # upper-cased)
    api = make_api()
    job = api.submit(SAVE, {"a": 1}, run_at=(timezone.now() + timedelta(hours=1)).isoformat())
    endpoint = api.post("/api/webhook-endpoints/", json={"url": "http://127.0.0.1:9/hooks"}).json()
    job_id, endpoint_id = job["id"].upper(), endpoint["id"].upper()

    # When they are read (and the job canceled) by those paths
    read = api.get(f"/api/jobs/{job_id}/")
    deliveries = api.get(f"/api/jobs/{job_id}/deliveries/")
    canceled = api.post(f"/api/jobs/{job_id}/cancel/")
    endpoint_read = api.get(f"/api/webhook-endpoints/{endpoint_id}/")

    # Then each is the resource, as `?job_id=` and `?job=` already took it: each was a 404
    assert read.status_code == 200 and read.json()["id"] == job["id"], read.text
    assert deliveries.status_code == 200, deliveries.text
    assert canceled.status_code == 202 and canceled.json()["id"] == job["id"], canceled.text
    assert endpoint_read.status_code == 200 and endpoint_read.json()["id"] == endpoint["id"], endpoint_read.text
    assert api.get("/api/job/", params={"job_id": job_id}).json()["task_id"] == job["id"]
    # An id that is not a UUID still is no resource
    assert api.get(f"/api/jobs/{job_id[:-1]}G/").status_code == 404
