"""A running step's lease (jobs/leases.py): a second copy of its message, as the broker hands out
again when the worker running it loses its connection, runs nothing while the step's worker keeps
its heartbeat, and runs the step once that worker is gone (its heartbeat stale). With the shared
worker and a checklist job, whose every run of a step is a model call the fake provider counts."""
from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.backends.signals import connection_created
from django.utils import timezone

from jobs import dispatch, leases
from jobs.models import Job
from tests.conftest import Api, worker_log_lines
from tests.fakes.openai_server import FakeOpenAI, Reply, Scenario

CHECKLIST = "api.tasks.generate_checklist_from_guidelines"


def answers(scenario: Scenario, *, gate: threading.Event | None = None) -> None:
    """The model's answers to the job's two steps (the first held until `gate` is set)."""
    scenario.add(Reply.answer({"summary": f"Sign the record. ({scenario.token})"}, gate=gate),
                 Reply.answer({"checklist": [{"task": "Sign."}]}))


def copy_waited(celery_worker_log: Path, job_id: str, scenario: Scenario, *, calls: int) -> None:
    """Until the copy of the job's message said it waits for the live run (up to 30 s), or the
    model got more than its `calls` so far: the copy ran the step again, which the test counts."""
    deadline = time.monotonic() + 30
    while not worker_log_lines(celery_worker_log, "another run of it is alive", f"job_id={job_id}"):
        if len(scenario.requests) > calls or time.monotonic() > deadline:
            return
        time.sleep(0.1)


def started_elsewhere(api: Api, scenario: Scenario, *, heartbeat_ago: timedelta) -> Job:
    """A checklist job whose first step a worker started, its last heartbeat `heartbeat_ago`, and
    that no worker runs any more (killed): only its message's second copy is left to run it."""
    now = timezone.now()
    return Job.objects.create(owner=api.client, job_name=CHECKLIST, dispatched_at=now,
                              payload={"guidelines": f"Sign the record. ({scenario.token})"},
                              status=Job.Status.STARTED, started_at=now - heartbeat_ago,
                              step_heartbeat_at=now - heartbeat_ago)


def test_a_second_copy_of_a_running_steps_message_does_not_run_it_again(
    api: Api, fake_openai: FakeOpenAI, celery_worker_log: Path
) -> None:
    # Given a checklist job whose first step a worker runs, waiting for the model's answer
    scenario, gate = fake_openai.scenario(), threading.Event()
    answers(scenario, gate=gate)
    job = api.submit(CHECKLIST, {"guidelines": f"Sign the record. ({scenario.token})"})
    deadline = time.monotonic() + 30
    while not scenario.requests:
        assert time.monotonic() < deadline, "the step never called the model"
        time.sleep(0.05)

    # When a second copy of its message arrives meanwhile (the broker handed it out again), and
    # only then the model answers
    dispatch.job_publish(job=Job.objects.get(pk=job["id"]))
    copy_waited(celery_worker_log, job['id'], scenario, calls=1)
    gate.set()

    # Then the job succeeds, and each step called the model once, even after the copy looked again
    done = api.wait(job["id"], timeout=60)
    assert done["status"] == "SUCCESS", done["error"]
    assert done["result"]["checklist"] == [{"task": "Sign.", "is_complete": False}]
    time.sleep(settings.JOB_STEP_LEASE_SECONDS + 5)  # the copy's second look, at a final job
    assert len(scenario.requests) == 2


def test_a_second_copy_of_a_running_handed_over_steps_message_does_not_run_it_again(
    api: Api, fake_openai: FakeOpenAI, celery_worker_log: Path
) -> None:
    # Given a checklist job whose second step (handed over on its row) a worker runs, waiting for
    # the model's answer
    scenario, gate = fake_openai.scenario(), threading.Event()
    scenario.add(Reply.answer({"summary": f"Sign the record. ({scenario.token})"}),
                 Reply.answer({"checklist": [{"task": "Sign."}]}, gate=gate))
    job = api.submit(CHECKLIST, {"guidelines": f"Sign the record. ({scenario.token})"})
    deadline = time.monotonic() + 30
    while len(scenario.requests) < 2:
        assert time.monotonic() < deadline, "the second step never called the model"
        time.sleep(0.05)

    # When a second copy of its message arrives meanwhile, one the step would take for its own
    # cut-off run (a retry's, as a redelivered one), and only then the model answers
    dispatch.job_signatures(job=Job.objects.get(pk=job["id"]))[0].apply_async(retries=1)
    copy_waited(celery_worker_log, job['id'], scenario, calls=2)
    gate.set()

    # Then the job succeeds, and each step called the model once, even after the copy looked again
    done = api.wait(job["id"], timeout=60)
    assert done["status"] == "SUCCESS", done["error"]
    time.sleep(settings.JOB_STEP_LEASE_SECONDS + 5)
    assert len(scenario.requests) == 2


def test_a_second_copy_runs_the_step_when_its_worker_is_gone(api: Api, fake_openai: FakeOpenAI) -> None:
    # Given a job whose first step's worker was killed long enough ago that its heartbeat is stale
    scenario = fake_openai.scenario()
    answers(scenario)
    job = started_elsewhere(api, scenario, heartbeat_ago=timedelta(seconds=settings.JOB_STEP_LEASE_SECONDS + 1))

    # When its message's second copy arrives
    dispatch.job_publish(job=job)

    # Then it runs the step, and the job succeeds, each step calling the model once
    done = api.wait(str(job.id), timeout=30)
    assert (done["status"], done["result"]["checklist"]) == ("SUCCESS", [{"task": "Sign.", "is_complete": False}])
    assert len(scenario.requests) == 2


def test_a_second_copy_that_found_a_fresh_heartbeat_runs_the_step_once_it_goes_stale(
    api: Api, fake_openai: FakeOpenAI
) -> None:
    # Given a job whose first step's worker was killed just after its last heartbeat
    scenario = fake_openai.scenario()
    answers(scenario)
    job = started_elsewhere(api, scenario, heartbeat_ago=timedelta(seconds=settings.JOB_STEP_LEASE_SECONDS - 5))

    # When its message's second copy arrives, while the heartbeat is still fresh
    dispatch.job_publish(job=job)

    # Then it waits, but the job is not lost: the copy looks again once the heartbeat is stale
    # and runs the step, and the job succeeds, each step calling the model once
    time.sleep(2)
    assert not scenario.requests
    done = api.wait(str(job.id), timeout=60)
    assert (done["status"], done["result"]["checklist"]) == ("SUCCESS", [{"task": "Sign.", "is_complete": False}])
    assert len(scenario.requests) == 2


def test_a_step_shorter_than_a_beat_costs_its_heartbeat_thread_no_connection(db: Any) -> None:
    # Given the database connections opened from now on, by thread
    opened: list[str] = []

    def record(sender: Any, connection: Any, **kwargs: Any) -> None:
        opened.append(threading.current_thread().name)

    connection_created.connect(record, weak=False)
    try:
        # When a step ends before its first heartbeat
        with leases.step_lease_kept(job_id=uuid.uuid4()):
            pass
    finally:
        connection_created.disconnect(record)

    # Then its heartbeat thread opened no connection (and so made no query), nor closed one it
    # would have opened to close
    assert [name for name in opened if name.startswith("lease-")] == []
