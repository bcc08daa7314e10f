"""A cancel of a job between two of its steps (the next one handed over, not started: its message
waits in a queue, or for the sweeper while the broker is down) ends it at once, as a queued job's
does: no step of it runs, nor would look at its cancel flag, before that message arrives."""
from __future__ import annotations

from typing import Any

import pytest
from django.test import Client as DjangoClient
from django.utils import timezone

from core import pause
from core.pause import PauseAfterFailure
from core.services import api_key_create, client_create
from jobs import dispatch, tasks
from jobs.models import Job, JobCounts, JobEvent
from tests.conftest import broker_refusing
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.locks import meanwhile

CHECKLIST = "api.tasks.generate_checklist_from_guidelines"


@pytest.fixture
def fresh_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's broker pause as a new process has it (none), and forgotten afterwards."""
    monkeypatch.setattr(pause, "broker", PauseAfterFailure(pause.BROKER_RETRY_SECONDS))


def test_a_job_canceled_while_its_next_step_waits_for_the_broker_ends_at_once(
    db: Any, fake_openai: FakeOpenAI, fresh_pause: None
) -> None:
    # Given a checklist job whose first step ended while the broker refused its second's message
    # (in the test's transaction: the shared worker never sees it)
    scenario = fake_openai.scenario()
    scenario.add(Reply.answer({"summary": f"Sign the record. ({scenario.token})"}))
    owner = client_create(name=f"between-steps-{scenario.token[-8:]}")
    job = Job.objects.create(owner=owner, job_name=CHECKLIST, dispatched_at=timezone.now(),
                             payload={"guidelines": f"Sign it. ({scenario.token})"})
    with broker_refusing():
        assert tasks.job_run_step.apply(kwargs=dispatch.job_signatures(job=job)[0].kwargs).state == "SUCCESS"
    job.refresh_from_db()
    assert (job.status, job.next_step, job.dispatched_at) == ("STARTED", 1, None)

    # When its client cancels it
    http = DjangoClient(HTTP_AUTHORIZATION=f"Bearer {api_key_create(client=owner)}")
    answer = http.post(f"/api/jobs/{job.id}/cancel/")

    # Then it is canceled at once, with its job.canceled event, and no longer counts as running
    assert (answer.status_code, answer.json()["status"]) == (202, "REVOKED")
    assert http.get(f"/api/jobs/{job.id}/").json()["status"] == "REVOKED"
    events = list(JobEvent.objects.filter(job_id=job.id).values_list("event_type", flat=True).order_by("id"))
    assert (events[-1], events.count("job.canceled"), events.count("job.succeeded")) == ("job.canceled", 1, 0)
    assert JobCounts.objects.get(owner=owner).running == 0
    # ...and once the broker is back, the sweeper publishes none of it, and no step runs again
    assert dispatch.job_steps_publish_waiting() == 0
    assert len(scenario.requests) == 1


@pytest.mark.django_db(transaction=True)
def test_a_job_whose_cancel_came_as_a_step_ran_ends_as_that_step_ends(
    fake_openai: FakeOpenAI, fresh_pause: None
) -> None:
    # Given a checklist job whose first step runs (its model answers it), while the broker
    # refuses its second step's message
    scenario = fake_openai.scenario()
    scenario.add(Reply.answer({"summary": f"Sign the record. ({scenario.token})"}))
    owner = client_create(name=f"cancel-in-step-{scenario.token[-8:]}")
    http = DjangoClient(HTTP_AUTHORIZATION=f"Bearer {api_key_create(client=owner)}")
    job = Job.objects.create(owner=owner, job_name=CHECKLIST, dispatched_at=timezone.now(),
                             payload={"guidelines": f"Sign it. ({scenario.token})"})

    # When its client cancels it after the step's last look at its cancel flag, as the step ends
    with broker_refusing(), meanwhile(lambda: http.post(f"/api/jobs/{job.id}/cancel/").json()["status"],
                                      at='UPDATE "jobs_job" SET "next_step"') as canceled:
        assert tasks.job_run_step.apply(kwargs=dispatch.job_signatures(job=job)[0].kwargs).state == "SUCCESS"

    # Then the cancel found a step running, and the job ends canceled as that step ends: its next
    # step is not handed over, and no longer holds its client's running place
    assert canceled == ["STARTED"]
    assert http.get(f"/api/jobs/{job.id}/").json()["status"] == "REVOKED"
    assert JobCounts.objects.get(owner=owner).running == 0
    assert dispatch.job_steps_publish_waiting() == 0
    assert len(scenario.requests) == 1
