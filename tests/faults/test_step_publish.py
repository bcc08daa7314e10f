"""Fault 3c: the broker is down at the moment a job's step ends, so the worker cannot send the
job's next step; the job waits for the broker, then goes on from that step, each step run once.
Fault 3f: the worker is killed between a step's hand-over and its publish, so no message of the
next step exists; the sweeper takes it for lost, and the job goes on from that step."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import fake_openai_env
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.faults.stack import Stack, WebhookReceiver, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

CHECKLIST_JOB = "api.tasks.generate_checklist_from_guidelines"


def test_redis_down_as_a_step_ends_delays_the_next_step_and_runs_each_step_once(
    make_stack: Callable[..., Stack], receiver: WebhookReceiver, figures: dict[str, Any]
) -> None:
    # Given the whole service, with Redis keeping its append-only file as in production, and a
    # three-step checklist job whose first step holds its model call until the test lets it go
    with FakeOpenAI() as model:
        answered = threading.Event()
        scenario = model.scenario()
        summary = f"Hand over in SBAR order. ({scenario.token})"
        scenario.add(Reply.answer({"summary": summary}, gate=answered),
                     Reply.answer({"checklist": [{"task": "Hand over in SBAR order."}]}))
        stack = make_stack(redis_appendonly=True, env=fake_openai_env(model))
        stack.start_service()
        api = stack.client()
        job = api.submit(CHECKLIST_JOB, {"guidelines": f"Hand over well. ({scenario.token})"},
                         callback_url=receiver.url)
        wait_for(lambda: scenario.requests, timeout=60, what="the first model call")

        # When Redis is killed, and the first step ends while it is down (its next step cannot
        # be sent), and Redis comes back some seconds later
        stack.redis.stop()
        answered.set()
        wait_for(lambda: api.job(job["id"])["progress"] == {"current": 1, "total": 2, "message": "summarising"},
                 timeout=10, what="the job's progress")
        time.sleep(5)  # the step's end, and its failed publish, while the broker is away
        status_while_down = api.job(job["id"])["status"]
        stack.redis.start()
        back_at = time.monotonic()

        # Then the job goes on from its second step and succeeds, no step having run twice (the
        # model was asked twice: once a step), and its one job.succeeded webhook arrives
        done = api.wait(job["id"], timeout=120)
        seconds_to_success = time.monotonic() - back_at
        assert done["status"] == "SUCCESS", done
        assert done["result"]["checklist"] == [{"task": "Hand over in SBAR order.", "is_complete": False}]
        time.sleep(3)  # room for a step run again, or a duplicate webhook, to show up
        assert len(scenario.requests) == 2
    wait_for(lambda: receiver.for_job(job["id"]), timeout=60, what="the webhook")
    assert [r.payload["type"] for r in receiver.for_job(job["id"])] == ["job.succeeded"]
    figures.update(status_while_down=status_while_down,
                   seconds_from_redis_back_to_success=round(seconds_to_success, 2))


def test_redis_down_as_a_job_ends_delays_its_webhook_only_until_the_dispatcher_runs(
    make_stack: Callable[..., Stack], receiver: WebhookReceiver, figures: dict[str, Any]
) -> None:
    # Given the whole service, and a job with a callback running its one step
    stack = make_stack(redis_appendonly=True)
    stack.start_service()
    api = stack.client()
    job = api.submit("api.tasks.long_running_task", {"duration": 3}, callback_url=receiver.url)
    api.wait(job["id"], until=lambda seen: seen["status"] == "STARTED")

    # When Redis is killed, the job ends while it is down (its webhook's message, the chain's
    # tail, cannot be sent), and Redis comes back
    stack.redis.stop()
    assert api.wait(job["id"], timeout=30)["status"] == "SUCCESS"
    time.sleep(2)  # the tail's failed publish
    stack.redis.start()
    back_at = time.monotonic()

    # Then its job.succeeded webhook arrives once the webhook dispatcher runs (every second
    # here), not once it takes the delivery for lost (10 minutes)
    wait_for(lambda: receiver.for_job(job["id"]), timeout=60, what="the webhook")
    seconds_to_webhook = time.monotonic() - back_at
    time.sleep(2)  # room for a duplicate to show up
    assert [r.payload["type"] for r in receiver.for_job(job["id"])] == ["job.succeeded"]
    figures.update(seconds_from_redis_back_to_webhook=round(seconds_to_webhook, 2))


def test_redis_down_as_a_step_fails_delays_its_retry_only_until_the_broker_is_back(
    make_stack: Callable[..., Stack], figures: dict[str, Any]
) -> None:
    # Given the whole service, with Redis keeping its append-only file as in production, and a
    # checklist job allowed two runs a second apart, whose first model call is held by the test
    # and then answered with something the job cannot use
    with FakeOpenAI() as model:
        answered = threading.Event()
        scenario = model.scenario()
        scenario.add(Reply.answer("not JSON", gate=answered),
                     Reply.answer({"summary": f"Hand over in SBAR order. ({scenario.token})"}),
                     Reply.answer({"checklist": [{"task": "Hand over in SBAR order."}]}))
        stack = make_stack(redis_appendonly=True, env=fake_openai_env(model))
        stack.start_service()
        api = stack.client()
        job = api.submit(CHECKLIST_JOB, {"guidelines": f"Hand over well. ({scenario.token})"},
                         retry={"max_attempts": 2, "backoff_seconds": 1})
        wait_for(lambda: scenario.requests, timeout=60, what="the first model call")

        # When Redis is killed, the first run fails while it is down (its retry's message cannot
        # be sent), and Redis comes back some seconds later
        stack.redis.stop()
        answered.set()
        wait_for(lambda: api.job(job["id"])["status"] == "RETRY", timeout=10, what="the job's retry")
        time.sleep(5)  # the failed publish of the retry, and its second due, while the broker is away
        stack.redis.start()
        back_at = time.monotonic()

        # Then the job runs again once the broker is back and succeeds on its second run, each
        # of its runs asking the model as it should (three calls in all: none lost, none twice)
        done = api.wait(job["id"], timeout=120)
        seconds_to_success = time.monotonic() - back_at
        assert (done["status"], done["attempt"]) == ("SUCCESS", 2), done
        time.sleep(3)  # room for a run repeated to show up
        assert len(scenario.requests) == 3
    figures.update(seconds_from_redis_back_to_success=round(seconds_to_success, 2))


# What a worker SIGKILLed (out of memory, its host lost) between a hand-over's commit and its
# publish leaves: the job's first step ended and its second handed over on the row, by the real
# transitions, and no message of that hand-over anywhere.
KILLED_AFTER_HAND_OVER = """
from django.utils import timezone
from jobs import hand_overs, transitions
from jobs.models import Job
job = Job.objects.get(pk={job_id!r})
assert transitions.job_start(job_id=job.id, dispatched_at=job.dispatched_at)
assert hand_overs.job_step_hand_over(job_id=job.id, step=1, step_input={step_input!r}, dispatched_at=timezone.now())
"""


def test_a_worker_killed_between_a_hand_over_and_its_publish_leaves_the_next_step_to_the_sweeper(
    make_stack: Callable[..., Stack], receiver: WebhookReceiver, figures: dict[str, Any]
) -> None:
    # Given the service (its jobs worker not up yet), a handed-over step's message taken for lost
    # after 5 s unstarted (6 h by default), and a checklist job with a callback
    with FakeOpenAI() as model:
        scenario = model.scenario()
        summary = f"Hand over in SBAR order. ({scenario.token})"
        scenario.add(Reply.answer({"checklist": [{"task": "Hand over in SBAR order."}]}))
        stack = make_stack(env={**fake_openai_env(model), "JOB_DISPATCH_LOST_AFTER_SECONDS": "5"})
        stack.start_web()
        stack.start_worker("deliveries", queues="webhooks,maintenance", pool="threads")
        stack.start_beat()
        api = stack.client()
        job = api.submit(CHECKLIST_JOB, {"guidelines": f"Hand over well. ({scenario.token})"},
                         callback_url=receiver.url)

        # When its first step ended and handed its second over, the worker killed before it
        # published it (the first step's message, still queued, belongs to an earlier dispatch)
        stack.manage("shell", "-c", KILLED_AFTER_HAND_OVER.format(job_id=job["id"], step_input={"summary": summary}))
        handed_over_at = time.monotonic()
        stack.start_worker("jobs", queues="jobs,jobs_long", concurrency=1)

        # Then the sweeper publishes the second step again once its message is taken for lost,
        # and the job goes on from there to SUCCESS, not failed as worker_lost: the second step
        # ran once (the model asked once), the first not again, and one job.succeeded webhook
        done = api.wait(job["id"], timeout=120)
        seconds_to_success = time.monotonic() - handed_over_at
        assert done["status"] == "SUCCESS", done
        assert done["result"]["checklist"] == [{"task": "Hand over in SBAR order.", "is_complete": False}]
        time.sleep(3)  # room for a step run again, or a duplicate webhook, to show up
        assert len(scenario.requests) == 1
    wait_for(lambda: receiver.for_job(job["id"]), timeout=60, what="the webhook")
    assert [r.payload["type"] for r in receiver.for_job(job["id"])] == ["job.succeeded"]
    figures.update(lost_after_seconds=5, seconds_from_hand_over_to_success=round(seconds_to_success, 2))
