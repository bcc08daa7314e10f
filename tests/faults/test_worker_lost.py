"""Fault 1: the process running a job is SIGKILLed; the job runs again and completes once. 1c: the
worker is SIGKILLed while a job waits out its retry backoff; the retry runs once due."""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import fake_openai_env
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.faults.stack import Api, Stack, WebhookReceiver, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

LONG = "api.tasks.long_running_task"
CHECKLIST = "api.tasks.generate_checklist_from_guidelines"


def _rerun_seen(api: Api, job_id: str, last_tick: int) -> Callable[[], bool]:
    """The job ran again: its progress went back below where the killed run stopped."""

    def check() -> bool:
        progress = api.job(job_id)["progress"] or {}
        return bool(progress.get("current", last_tick) < last_tick)

    return check


def _rerun_lines(stack: Stack, worker: str, job_id: str) -> list[str]:
    """The worker's WARNING lines saying the job's step runs again (its message redelivered)."""
    return [line for line in stack.logs[worker].read_text().splitlines()
            if "runs again: its message was redelivered" in line and job_id in line and "warning" in line.lower()]


def _assert_one_success_webhook(api: Api, receiver: WebhookReceiver, job_id: str) -> None:
    """Its webhook arrives once: one job.succeeded event, one delivery, one 2xx attempt."""
    wait_for(lambda: receiver.for_job(job_id), timeout=30, what="the webhook")
    def final_deliveries() -> list[dict[str, Any]] | None:
        deliveries = api.deliveries(job_id)
        return deliveries if all(d["state"] != "pending" for d in deliveries) else None

    deliveries = wait_for(final_deliveries, timeout=30, what="deliveries final")
    time.sleep(1)  # a duplicate, if there were one, would come within the retry schedule's 1 s
    received = receiver.for_job(job_id)
    assert [r.payload["type"] for r in received] == ["job.succeeded"]
    assert [(d["event_type"], d["state"]) for d in deliveries] == [("job.succeeded", "succeeded")]
    assert [a["status_code"] for a in deliveries[0]["attempts"]] == [200]
    assert deliveries[0]["webhook_id"] == received[0].webhook_id


def test_pool_process_sigkill_requeues_and_completes(
    make_stack: Callable[..., Stack], receiver: WebhookReceiver, figures: dict[str, Any]
) -> None:
    # Given a worker with one pool process running a 4-second job
    stack = make_stack()
    stack.start_web()
    stack.start_worker("jobs", concurrency=1)
    api = stack.client()
    job = api.submit(LONG, {"duration": 4, "message": "survivor"}, callback_url=receiver.url)
    api.wait(job["id"], until=lambda j: (j["progress"] or {}).get("current", 0) >= 2, timeout=60)

    # When the pool process is SIGKILLed mid-job
    (child,) = stack.pool_children("jobs")
    os.kill(child, signal.SIGKILL)
    killed_at = time.monotonic()

    # Then the message is rejected back to the queue, runs again and the job succeeds
    wait_for(_rerun_seen(api, job["id"], 2), timeout=60, interval=0.05, what="rerun")
    rerun_after = time.monotonic() - killed_at
    done = api.wait(job["id"], timeout=60)
    assert done["status"] == "SUCCESS", done
    assert done["result"] == "Slept for 4 seconds. Message: survivor"
    _assert_one_success_webhook(api, receiver, job["id"])
    # And the worker's log says which job ran again, and why
    assert _rerun_lines(stack, "jobs", job["id"]), stack.logs["jobs"].read_text()[-3000:]
    figures.update(seconds_until_rerun=round(rerun_after, 2),
                   seconds_until_success=round(time.monotonic() - killed_at, 2))


def test_main_process_sigkill_redelivers_after_visibility_timeout(
    make_stack: Callable[..., Stack], receiver: WebhookReceiver, figures: dict[str, Any]
) -> None:
    # Given a worker (and its pool) running a job, with a 10 s visibility timeout
    stack = make_stack(env={"CELERY_BROKER_VISIBILITY_TIMEOUT_SECONDS": "10"})
    stack.start_web()
    stack.start_worker("first", concurrency=1)
    api = stack.client()
    job = api.submit(LONG, {"duration": 4, "message": "survivor"}, callback_url=receiver.url)
    api.wait(job["id"], until=lambda j: (j["progress"] or {}).get("current", 0) >= 2, timeout=60)

    # When the worker's main process is SIGKILLed (its pool dies with it: PDEATHSIG) and a
    # replacement worker comes up at once, as a supervisor would start one
    pool = stack.pool_children("first")
    stack.kill("first")
    killed_at = time.monotonic()
    wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in pool), timeout=10,
             what="pool processes gone")
    stack.start_worker("second", concurrency=1)

    # Then the unacknowledged message is redelivered once the visibility timeout has passed
    wait_for(_rerun_seen(api, job["id"], 2), timeout=240, interval=0.1, what="rerun")
    rerun_after = time.monotonic() - killed_at
    done = api.wait(job["id"], timeout=60)
    assert done["status"] == "SUCCESS", done
    _assert_one_success_webhook(api, receiver, job["id"])
    assert _rerun_lines(stack, "second", job["id"]), stack.logs["second"].read_text()[-3000:]
    figures.update(visibility_timeout_seconds=10, seconds_until_rerun=round(rerun_after, 2),
                   seconds_until_success=round(time.monotonic() - killed_at, 2))


def test_a_worker_killed_while_a_retry_waits_out_its_backoff_does_not_delay_the_retry(
    make_stack: Callable[..., Stack], figures: dict[str, Any]
) -> None:
    # Given the service with a visibility timeout of 10 minutes (2 h by default), and a checklist
    # job allowed two runs 10 s apart (longer than a sweep, 1 s here), whose first summary is
    # malformed
    with FakeOpenAI() as model:
        scenario = model.scenario()
        scenario.add(Reply.answer("not JSON"),
                     Reply.answer({"summary": f"Hand over in SBAR order. ({scenario.token})"}),
                     Reply.answer({"checklist": [{"task": "Hand over in SBAR order."}]}))
        stack = make_stack(env={**fake_openai_env(model), "CELERY_BROKER_VISIBILITY_TIMEOUT_SECONDS": "600"})
        stack.start_service()
        api = stack.client()
        job = api.submit(CHECKLIST, {"guidelines": f"Hand over well. ({scenario.token})"},
                         retry={"max_attempts": 2, "backoff_seconds": 10})

        # When its first run has failed, and the jobs worker's main process (its pool with it) is
        # SIGKILLed while the job waits out its backoff, a replacement coming up at once
        api.wait(job["id"], until=lambda seen: (seen["status"], seen["attempt"]) == ("RETRY", 2), timeout=60)
        time.sleep(2)  # room for the worker to take a message of the retry, had it one
        stack.kill("jobs")
        killed_at = time.monotonic()
        stack.start_worker("jobs-after", queues="jobs,jobs_long", concurrency=1)

        # Then the retry runs once its backoff has passed (the sweeper publishes it from the
        # job's row), not after the visibility timeout (a worker held it as an ETA message, and
        # it went with the worker), and the job succeeds on its second run, each run asking the
        # model as it should
        done = api.wait(job["id"], timeout=120)
        assert (done["status"], done["attempt"]) == ("SUCCESS", 2), done
        assert len(scenario.requests) == 3
    figures.update(backoff_seconds=10, visibility_timeout_seconds=600,
                   seconds_from_kill_to_success=round(time.monotonic() - killed_at, 2))


def test_a_worker_killed_leaves_nothing_in_the_system_temporary_folder(
    system_tmp: Path, make_stack: Callable[..., Stack]
) -> None:
    # Given a worker of a stack started where the system's temporary folder is this test's own
    stack = make_stack()
    stack.start_worker("jobs", concurrency=1)

    # When its main process is SIGKILLed
    stack.kill("jobs")

    # Then what it kept there (billiard's pymp-* directory, which it removes as it stops) is in
    # the stack's directory, which goes with the test: each kill left one in /tmp
    assert list(system_tmp.iterdir()) == []
