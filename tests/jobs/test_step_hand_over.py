"""A step that ends hands the job's next step over on the job's row, then publishes it: a broker
that refuses the message leaves the step to the sweeper, not lost, and each step runs once
whichever of its messages arrives (tests/faults/test_step_publish.py does it with a real outage)."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from celery.signals import before_task_publish
from django.conf import settings
from django.test import Client as DjangoClient
from django.utils import timezone

from core import pause
from core.pause import PauseAfterFailure
from core.services import api_key_create, client_create
from jobs import dispatch, tasks, transitions
from jobs.models import Job
from jobs.registry import job_type_get
from tests.conftest import broker_refusing
from tests.fakes.openai_server import FakeOpenAI, Reply, Scenario

CHECKLIST = "api.tasks.generate_checklist_from_guidelines"


@pytest.fixture
def step_messages(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """The jobs.run_step messages this process sends (or tries to: the list is written before the
    broker is asked), as args, kwargs and eta of each; no earlier failed publish holds the next
    back."""
    monkeypatch.setattr(pause, "broker", PauseAfterFailure(pause.BROKER_RETRY_SECONDS))
    sent: list[dict[str, Any]] = []

    def record(sender: str, body: Any, headers: dict[str, Any], **kwargs: Any) -> None:
        if sender == dispatch.RUN_STEP_TASK:
            sent.append({"args": tuple(body[0]), "kwargs": body[1], "eta": headers.get("eta")})

    before_task_publish.connect(record, weak=False)
    yield sent
    before_task_publish.disconnect(record)


def started_checklist(scenario: Scenario, **fields: Any) -> tuple[Job, DjangoClient]:
    """A checklist job (three steps; `fields` set on its row) handed to the broker, with its
    client; in the test's transaction, so the shared worker never sees it and the test
    delivers its messages itself."""
    owner = client_create(name=f"hand-over-{scenario.token[-8:]}")
    job = Job.objects.create(owner=owner, job_name=CHECKLIST, dispatched_at=timezone.now(),
                             payload={"guidelines": f"Hand over well. ({scenario.token})"}, **fields)
    return job, DjangoClient(HTTP_AUTHORIZATION=f"Bearer {api_key_create(client=owner)}")


def run(message: dict[str, Any]) -> str:
    return str(tasks.job_run_step.apply(args=message["args"], kwargs=message["kwargs"]).state)


def test_a_next_step_the_broker_refused_is_published_by_the_sweeper_and_each_step_runs_once(
    db: Any, fake_openai: FakeOpenAI, step_messages: list[dict[str, Any]]
) -> None:
    # Given a checklist job whose model answers each step once
    scenario = fake_openai.scenario()
    summary = f"Hand over in SBAR order. ({scenario.token})"
    scenario.add(Reply.answer({"summary": summary}), Reply.answer({"checklist": [{"task": "SBAR."}]}))
    job, http = started_checklist(scenario)
    first = {"args": (), "kwargs": dispatch.job_signatures(job=job)[0].kwargs}

    # When its first step ends while the broker refuses connections, and the sweeper runs then
    with broker_refusing():
        assert run(first) == "SUCCESS"
        assert dispatch.job_steps_publish_waiting() == 0
    refused = step_messages[0]

    # Then the job is still running, its second step not lost: once the broker is back, the
    # sweeper publishes it from the second step, with the first step's output
    assert http.get(f"/api/jobs/{job.id}/").json()["status"] == "STARTED"
    assert dispatch.job_steps_publish_waiting() == 1
    republished = step_messages[-1]
    assert republished["kwargs"]["index"] == refused["kwargs"]["index"] == 1
    assert republished["args"] == ({"summary": summary},)

    # When the refused message reached the broker after all, and arrives before the sweeper's
    assert run(refused) == "IGNORED"
    # Then it ran nothing; the sweeper's runs the job on to its end, each step once
    assert len(scenario.requests) == 1
    assert run(republished) == "SUCCESS"
    assert run(step_messages[-1]) == "SUCCESS"  # the last step, handed over by the second
    done = http.get(f"/api/jobs/{job.id}/").json()
    assert (done["status"], done["result"]["checklist"]) == ("SUCCESS", [{"task": "SBAR.", "is_complete": False}])
    assert len(scenario.requests) == 2
    # ...and any of the job's earlier messages delivered again does nothing either
    assert {run(message) for message in (first, refused, republished)} == {"SUCCESS"}
    assert len(scenario.requests) == 2


def test_a_job_waiting_for_the_sweeper_to_publish_its_next_step_is_not_abandoned(
    db: Any, fake_openai: FakeOpenAI, step_messages: list[dict[str, Any]]
) -> None:
    # Given a checklist job whose first step ended while the broker refused its second's message
    scenario = fake_openai.scenario()
    scenario.add(Reply.answer({"summary": f"Sign the record. ({scenario.token})"}))
    job, http = started_checklist(scenario)
    with broker_refusing():
        assert run({"args": (), "kwargs": dispatch.job_signatures(job=job)[0].kwargs}) == "SUCCESS"
    job_type = job_type_get(CHECKLIST)
    limit = timedelta(seconds=settings.CELERY_BROKER_VISIBILITY_TIMEOUT_SECONDS
                      + len(job_type.steps) * job_type.time_limit_seconds + 60)

    # When the broker stays away past the abandoned-job rule's limit
    Job.objects.filter(pk=job.pk).update(started_at=timezone.now() - limit - timedelta(hours=1))

    # Then the rule leaves the job to the sweeper: it waits for the broker, no worker lost it
    assert transitions.jobs_fail_abandoned() == 0
    assert http.get(f"/api/jobs/{job.id}/").json()["status"] == "STARTED"

    # ...and once the sweeper published it, the limit runs from then: a message lost after that
    # (Redis lost its data) still ends in worker_lost
    assert dispatch.job_steps_publish_waiting() == 1
    assert transitions.jobs_fail_abandoned() == 0
    Job.objects.filter(pk=job.pk).update(dispatched_at=timezone.now() - limit - timedelta(seconds=1))
    assert transitions.jobs_fail_abandoned() == 1
    assert http.get(f"/api/jobs/{job.id}/").json()["error"]["type"] == "worker_lost"


def test_a_retry_the_broker_refused_is_published_by_the_sweeper_once_due_and_runs_once(
    db: Any, fake_openai: FakeOpenAI, step_messages: list[dict[str, Any]]
) -> None:
    # Given a checklist job allowed two runs a minute apart, whose model first answers something
    # the job cannot use
    scenario = fake_openai.scenario()
    scenario.add(Reply.answer("not JSON"), Reply.answer({"summary": f"Sign the record. ({scenario.token})"}),
                 Reply.answer({"checklist": [{"task": "Sign the record."}]}))
    job, http = started_checklist(scenario, max_attempts=2, retry_backoff_seconds=60)
    first = {"args": (), "kwargs": dispatch.job_signatures(job=job)[0].kwargs}

    # When its first run fails while the broker refuses connections
    with broker_refusing():
        failed_at = timezone.now()
        assert run(first) == "SUCCESS"
    refused = step_messages[0]

    # Then its second run was sent from its first step, to run once the minute has passed, and,
    # refused, is not lost: the job waits out its backoff, and the sweeper leaves it until then
    assert refused["kwargs"]["index"] == 0
    assert timedelta(seconds=59) < datetime.fromisoformat(refused["eta"]) - failed_at < timedelta(seconds=61)
    waiting = http.get(f"/api/jobs/{job.id}/").json()
    assert (waiting["status"], waiting["attempt"], waiting["error"]["type"]) == ("RETRY", 2, "invalid_model_output")
    assert dispatch.job_steps_publish_waiting() == 0
    assert transitions.jobs_fail_abandoned() == 0

    # When its second run is due, and the sweeper runs
    Job.objects.filter(pk=job.pk).update(retry_at=timezone.now())
    assert dispatch.job_steps_publish_waiting() == 1
    republished = step_messages[-1]

    # Then the sweeper sent it from the first step, to run now; the refused message, had it
    # reached the broker after all, runs nothing, and the sweeper's runs the job to its end
    assert (republished["kwargs"]["index"], republished["eta"]) == (0, None)
    assert run(refused) == "IGNORED"
    assert len(scenario.requests) == 1
    assert run(republished) == "SUCCESS"
    assert run(step_messages[-1]) == "SUCCESS"  # the second step, handed over by the first
    assert run(step_messages[-1]) == "SUCCESS"  # the third, handed over by the second
    done = http.get(f"/api/jobs/{job.id}/").json()
    assert (done["status"], done["attempt"], done["error"]) == ("SUCCESS", 2, None)
    assert len(scenario.requests) == 3
