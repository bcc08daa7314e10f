"""Fault 3: the broker is down while clients submit; every submission is kept and runs later."""
from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.faults.stack import Stack, WebhookReceiver, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

SUBMISSIONS = 40


def test_submissions_while_redis_is_down_all_run_once_it_returns(
    make_stack: Callable[..., Stack], receiver: WebhookReceiver, figures: dict[str, Any]
) -> None:
    # Given the whole service running, the submission rate limit on as in production (its
    # counters live in the same Redis), then that Redis killed
    stack = make_stack(env={"API_SUBMIT_RATE_PER_MINUTE": "100000"})
    stack.start_web()
    stack.start_worker("jobs", concurrency=2)
    stack.start_beat()
    api = stack.client()
    warm = api.submit("api.tasks.hello_world", {"message": "before"}, callback_url=receiver.url)
    assert api.wait(warm["id"])["status"] == "SUCCESS"
    stack.redis.stop()

    # When clients submit while it is down (4 at a time)
    def submit(index: int) -> tuple[int, float, str]:
        started = time.monotonic()
        response = api.post("/api/jobs/", json={
            "job_name": "api.tasks.hello_world", "payload": {"message": str(index)},
            "callback_url": receiver.url,
        })
        return response.status_code, time.monotonic() - started, response.json().get("id", "")

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(submit, range(SUBMISSIONS)))

    # Then every submission was accepted, and nothing ran
    assert [code for code, _, _ in answers] == [202] * SUBMISSIONS
    ids = [job_id for _, _, job_id in answers]
    assert {api.job(job_id)["status"] for job_id in ids} == {"PENDING"}

    # When the broker comes back (empty: it kept nothing)
    stack.redis.start()
    back_at = time.monotonic()

    # Then the sweeper publishes every job, each runs, and each webhook arrives once
    for job_id in ids:
        assert api.wait(job_id, timeout=120)["status"] == "SUCCESS"
    all_done = time.monotonic() - back_at
    wait_for(lambda: all(receiver.for_job(job_id) for job_id in ids), timeout=60, what="webhooks")
    time.sleep(2)  # room for a duplicate to show up, if there were one
    for job_id in ids:
        assert [r.payload["type"] for r in receiver.for_job(job_id)] == ["job.succeeded"]
    latencies = sorted(seconds for _, seconds, _ in answers)
    figures.update(
        submissions=SUBMISSIONS,
        submit_seconds_median=round(latencies[len(latencies) // 2], 3),
        submit_seconds_max=round(latencies[-1], 3),
        seconds_from_broker_back_to_all_success=round(all_done, 2),
        worker_restarts=sum(stack.restarts.values()),
    )


def test_redis_crash_with_jobs_queued_loses_nothing_with_appendonly(
    make_stack: Callable[..., Stack], receiver: WebhookReceiver, figures: dict[str, Any]
) -> None:
    # Given Redis with its append-only file on (as in docker-compose.yaml), one worker busy with
    # a 3-second job and ten more jobs queued behind it
    stack = make_stack(redis_appendonly=True)
    stack.start_web()
    stack.start_worker("jobs", concurrency=1)
    stack.start_beat()
    api = stack.client()
    long = api.submit("api.tasks.long_running_task", {"duration": 3}, callback_url=receiver.url)
    api.wait(long["id"], until=lambda job: job["status"] == "STARTED")
    queued = [api.submit("api.tasks.hello_world", {"message": str(i)}, callback_url=receiver.url)["id"]
              for i in range(10)]

    # When Redis is SIGKILLed with those messages in it, and restarted two seconds later
    stack.redis.stop()
    time.sleep(2)
    stack.redis.start()
    back_at = time.monotonic()

    # Then every job runs and every webhook arrives once
    ids = [long["id"], *queued]
    for job_id in ids:
        assert api.wait(job_id, timeout=120)["status"] == "SUCCESS"
    all_done = time.monotonic() - back_at
    wait_for(lambda: all(receiver.for_job(job_id) for job_id in ids), timeout=60, what="webhooks")
    time.sleep(2)
    for job_id in ids:
        assert [r.payload["type"] for r in receiver.for_job(job_id)] == ["job.succeeded"]
    figures.update(queued_jobs=len(ids), seconds_from_redis_back_to_all_success=round(all_done, 2))


def test_a_worker_that_loses_its_broker_writes_no_deprecation_warning(make_stack: Callable[..., Stack]) -> None:
    # Given a worker connected to its Redis
    stack = make_stack()
    stack.start_worker("jobs", concurrency=1)

    # When Redis goes away, and comes back
    stack.redis.stop()
    wait_for(lambda: "Connection to broker lost" in stack.logs["jobs"].read_text(), timeout=60, what="the loss")
    stack.redis.start()
    stack.wait_worker_ready("jobs")

    # Then the worker said it lost the connection, and not Celery's warning about what it does
    # then to its running tasks, which it was told (CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS)
    log = stack.logs["jobs"].read_text()
    assert "CPendingDeprecationWarning" not in log and "connection_loss" not in log, log
