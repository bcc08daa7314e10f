"""The starter's endpoints, listing and filtering, job types, and the broker-down path."""
from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from jobs.dispatch import job_publish
from jobs.models import Job
from jobs.tasks import jobs_dispatch_sweep
from tests.conftest import Api, SilentServer, use_broker


def test_starter_endpoints_keep_their_shapes(api: Api) -> None:
    response = api.post("/api/job/", json={"job_name": "api.tasks.hello_world", "payload": {"message": "old"}})
    assert response.status_code == 202
    assert set(response.json()) == {"task_id"}
    task_id = response.json()["task_id"]

    api.wait(task_id)
    polled = api.get(f"/api/job/?job_id={task_id}")

    assert polled.json() == {"task_id": task_id, "status": "SUCCESS", "result": "hello world old"}


def test_starter_poll_without_job_id_is_400_and_unknown_is_404(make_api: Callable[..., Api]) -> None:
    api = make_api()
    assert api.get("/api/job/").status_code == 400
    assert api.get("/api/job/?job_id=00000000-0000-0000-0000-000000000000").status_code == 404
    assert api.get("/api/job/?job_id=garbage").status_code == 404


def _make_jobs(api: Api, count: int, **fields: Any) -> list[Job]:
    now = timezone.now()
    return Job.objects.bulk_create(
        Job(owner=api.client, job_name="api.tasks.hello_world", created_at=now - timedelta(minutes=i),
            dispatched_at=now, **fields)
        for i in range(count)
    )


def test_jobs_list_newest_first_with_cursor_pages(make_api: Callable[..., Api]) -> None:
    api = make_api()
    jobs = _make_jobs(api, 7)

    page = api.get("/api/jobs/?page_size=3").json()
    seen = [job["id"] for job in page["results"]]
    while page["next"]:
        page = api.get(page["next"].replace(api.base_url, "")).json()
        seen += [job["id"] for job in page["results"]]

    assert seen == [str(job.id) for job in jobs]  # created newest first
    assert page["previous"] is not None


def test_page_size_is_capped_at_500(make_api: Callable[..., Api]) -> None:
    api = make_api()
    _make_jobs(api, 501)

    assert len(api.get("/api/jobs/?page_size=10000").json()["results"]) == 500
    assert len(api.get("/api/jobs/").json()["results"]) == 50


def test_jobs_list_filters(make_api: Callable[..., Api]) -> None:
    api = make_api()
    done = _make_jobs(api, 2, status="SUCCESS")
    _make_jobs(api, 3)
    Job.objects.filter(pk=done[0].pk).update(job_name="api.tasks.long_running_task")

    def ids(query: str) -> set[str]:
        return {job["id"] for job in api.get(f"/api/jobs/?{query}").json()["results"]}

    assert ids("status=SUCCESS") == {str(job.id) for job in done}
    assert ids("job_name=api.tasks.long_running_task") == {str(done[0].id)}
    cutoff = (timezone.now() - timedelta(seconds=90)).isoformat().replace("+00:00", "Z")
    assert len(ids(f"created_after={cutoff}")) == 4  # the two newest of each batch
    assert len(ids(f"created_before={cutoff}")) == 1


def test_job_types_lists_each_type_with_its_schema(make_api: Callable[..., Api], settings: Any) -> None:
    settings.OPENAI_API_KEY = ""
    settings.OPENAI_BASE_URL = ""
    api = make_api()

    types = {t["name"]: t for t in api.get("/api/job-types/").json()["results"]}

    assert set(types) == {
        "api.tasks.hello_world",
        "api.tasks.long_running_task",
        "api.tasks.save_task_result_test_task",
        "api.tasks.generate_checklist_from_guidelines",
    }
    long_running = types["api.tasks.long_running_task"]
    assert long_running["available"] is True
    assert long_running["payload_schema"]["properties"]["duration"]["maximum"] == 3600
    assert long_running["payload_schema"]["required"] == ["duration"]
    checklist = types["api.tasks.generate_checklist_from_guidelines"]
    assert checklist["available"] is False
    assert "OPENAI_API_KEY" in checklist["unavailable_reason"]


def test_canceling_a_queued_job_revokes_it_at_once(api: Api) -> None:
    # Given a job that is accepted but not yet picked up by a worker.
    [queued] = _make_jobs(api, 1)

    response = api.post(f"/api/jobs/{queued.id}/cancel/")

    assert response.status_code == 202
    assert response.json()["status"] == "REVOKED"
    # A message for it that reaches a worker later does not run it.
    job_publish(job=queued)
    time.sleep(1)
    job = api.get(f"/api/jobs/{queued.id}/").json()
    assert job["status"] == "REVOKED"
    assert job["started_at"] is None


def test_after_a_publish_fails_the_next_submissions_leave_their_jobs_to_the_sweeper(
    api: Api, broker_hung: SilentServer
) -> None:
    # Given a submission whose publish waited out a hung broker's timeout: the API's
    # (CELERY_BROKER_CONNECTION_TIMEOUT, 2 s), not the workers' 10 s, so it held its request
    # turn that long (a bound well above 2 s, for a busy machine)
    started = time.monotonic()
    first = api.submit("api.tasks.hello_world", {"message": "first"})
    took = time.monotonic() - started
    tried = len(broker_hung.connections)
    assert tried >= 1
    assert took < 5, took

    # When the client submits three more at once after it
    later = [api.submit("api.tasks.hello_world", {"message": str(n)}) for n in range(3)]

    # Then each is accepted without trying the broker again, its job left to the sweeper (the
    # session's worker, whose broker answers, may publish them at once: the first job is two
    # seconds old, past the sweeper's grace, and each job of the client that ends has the
    # client's waiting ones published)
    assert len(broker_hung.connections) == tried
    assert [job["status"] for job in later] == ["PENDING"] * 3

    # and once the broker answers, the sweeper publishes them and each runs
    use_broker(settings.CELERY_BROKER_URL)
    assert {api.wait(job["id"], timeout=60)["status"] for job in [first, *later]} == {"SUCCESS"}


def test_after_a_revoke_fails_the_next_cancels_leave_the_broker_alone(api: Api, broker_hung: SilentServer) -> None:
    # Given four queued jobs, and a cancel whose revoke broadcast waited out a hung broker
    queued = _make_jobs(api, 4)
    first = api.post(f"/api/jobs/{queued[0].id}/cancel/")
    tried = len(broker_hung.connections)
    assert first.status_code == 202 and tried >= 1

    # When the client cancels the three others right after it
    later = [api.post(f"/api/jobs/{job.id}/cancel/") for job in queued[1:]]

    # Then each is canceled without trying the broker again
    assert [response.json()["status"] for response in later] == ["REVOKED"] * 3
    assert len(broker_hung.connections) == tried

    # and once the broker answers, their messages reach a worker that runs none of them (one
    # submitted behind them has run by then)
    use_broker(settings.CELERY_BROKER_URL)
    for job in queued:
        job_publish(job=job)
    assert api.wait(api.submit("api.tasks.hello_world", {"message": "after"})["id"])["status"] == "SUCCESS"
    canceled = Job.objects.filter(pk__in=[job.pk for job in queued])
    assert [(job.status, job.started_at) for job in canceled] == [("REVOKED", None)] * 4


def test_a_job_accepted_while_the_broker_is_down_runs_once_it_is_back(api: Api, broker_down: None) -> None:
    # Given the broker is unreachable, a submission still answers 202 and keeps the job.
    job = api.submit("api.tasks.hello_world", {"message": "late"})
    row = Job.objects.get(pk=job["id"])
    assert row.status == "PENDING" and row.dispatched_at is None

    # When the broker is back and the sweeper runs (beat runs it every second in this suite;
    # here it also runs in the test process, so a busy worker cannot delay the sweep itself).
    use_broker(settings.CELERY_BROKER_URL)
    first = jobs_dispatch_sweep()
    assert first in (0, 1)  # 0: beat's sweep took it a moment before
    assert Job.objects.get(pk=job["id"]).dispatched_at is not None or first == 0
    assert jobs_dispatch_sweep() == 0  # claimed once: never published twice

    # Then the job runs, once.
    done = api.wait(job["id"], timeout=60)
    assert done["status"] == "SUCCESS"
    assert done["result"] == "hello world late"
    assert Job.objects.get(pk=job["id"]).dispatched_at is not None
