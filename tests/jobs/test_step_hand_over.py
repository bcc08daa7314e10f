"""A step that ends hands the job's next step over on the job's row, then publishes it: a broker
that refuses the message leaves the step to the sweeper, not lost, and each step runs once
whichever of its messages arrives (tests/faults/test_step_publish.py does it with a real outage)."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from celery.signals import before_task_publish
from django.conf import settings
from django.db import connection
from django.test import Client as DjangoClient
from django.utils import timezone

from core import pause
from core.pause import PauseAfterFailure
from core.services import api_key_create, client_create
from jobs import abandoned, dispatch, hand_overs, leases, tasks, transitions
from jobs.models import Job
from jobs.registry import job_type_get
from tests.conftest import Api, broker_refusing
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


def handed_over(job: Job, *, ago: timedelta) -> None:
    """As if the job's next step was handed over `ago`, and its first step started before that."""
    Job.objects.filter(pk=job.pk).update(dispatched_at=timezone.now() - ago,
                                         started_at=timezone.now() - ago - timedelta(minutes=1))


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
    assert abandoned.jobs_fail_abandoned() == 0
    assert http.get(f"/api/jobs/{job.id}/").json()["status"] == "STARTED"

    # ...nor once the sweeper published it, however long no message starts the step (a message
    # lost after that is taken for lost, and published again: the next test)
    assert dispatch.job_steps_publish_waiting() == 1
    long_ago = timezone.now() - limit - timedelta(seconds=1)
    Job.objects.filter(pk=job.pk).update(dispatched_at=long_ago)
    assert abandoned.jobs_fail_abandoned() == 0

    # ...but once a message started the step, the limit runs from then: a worker lost running it
    # for good still ends the job worker_lost
    assert hand_overs.job_step_start(job_id=job.id, step=1, dispatched_at=long_ago, redelivered=False)
    Job.objects.filter(pk=job.pk).update(step_started_at=long_ago)
    assert abandoned.jobs_fail_abandoned() == 1
    assert http.get(f"/api/jobs/{job.id}/").json()["error"]["type"] == "worker_lost"


def test_a_next_step_whose_message_was_never_sent_is_published_again_once_taken_for_lost_and_runs_once(
    db: Any, fake_openai: FakeOpenAI, step_messages: list[dict[str, Any]]
) -> None:
    # Given a checklist job whose first step ended and handed its second over on the job's row,
    # the worker killed before it sent the message (the message is dropped here)
    scenario = fake_openai.scenario()
    summary = f"Sign the record. ({scenario.token})"
    scenario.add(Reply.answer({"summary": summary}), Reply.answer({"checklist": [{"task": "Sign."}]}))
    job, http = started_checklist(scenario)
    assert run({"args": (), "kwargs": dispatch.job_signatures(job=job)[0].kwargs}) == "SUCCESS"
    never_sent = step_messages.pop()
    job_type = job_type_get(CHECKLIST)
    limit = timedelta(seconds=settings.CELERY_BROKER_VISIBILITY_TIMEOUT_SECONDS
                      + len(job_type.steps) * job_type.time_limit_seconds + 60)

    # When an hour passes (past the abandoned-job rule's limit): its message may only be waiting
    # in a long queue
    handed_over(job, ago=max(limit, timedelta(hours=1)))

    # Then the job is neither failed nor published again
    assert abandoned.jobs_fail_abandoned() == 0
    assert tasks.jobs_dispatch_sweep.apply().get() == 0
    assert http.get(f"/api/jobs/{job.id}/").json()["status"] == "STARTED"

    # When JOB_DISPATCH_LOST_AFTER_SECONDS has passed since the hand-over (a day here; 6 h by default)
    handed_over(job, ago=timedelta(seconds=settings.JOB_DISPATCH_LOST_AFTER_SECONDS) + timedelta(days=1))

    # Then the sweeper publishes the second step again, with the first step's output, and it runs
    # the job to its end, each step once
    assert tasks.jobs_dispatch_sweep.apply().get() == 1
    republished = step_messages[-1]
    assert (republished["kwargs"]["index"], republished["args"]) == (1, ({"summary": summary},))
    assert run(republished) == "SUCCESS"
    assert run(step_messages[-1]) == "SUCCESS"  # the last step, handed over by the second
    done = http.get(f"/api/jobs/{job.id}/").json()
    assert (done["status"], done["result"]["checklist"]) == ("SUCCESS", [{"task": "Sign.", "is_complete": False}])
    assert len(scenario.requests) == 2
    # ...and the first message, had it only been waiting in a queue, runs nothing when it arrives
    assert run(never_sent) == "SUCCESS"
    assert len(scenario.requests) == 2


def test_another_message_of_a_hand_over_whose_step_runs_runs_nothing(
    api: Api, fake_openai: FakeOpenAI
) -> None:
    # Given a checklist job whose second step, handed over, runs on the worker, its model call
    # held by the test
    answered = threading.Event()
    scenario = fake_openai.scenario()
    summary = f"Sign the record. ({scenario.token})"
    scenario.add(Reply.answer({"checklist": [{"task": "Sign."}]}, gate=answered))
    job = Job.objects.create(owner=api.client, job_name=CHECKLIST, status=Job.Status.STARTED,
                             started_at=timezone.now(), payload={"guidelines": f"Sign. ({scenario.token})"})
    assert hand_overs.job_step_hand_over(job_id=job.id, step=1, step_input={"summary": summary},
                                         dispatched_at=timezone.now())
    job.refresh_from_db()
    message = {"args": (job.step_input,), "kwargs": dispatch.job_signatures(job=job)[0].kwargs}
    dispatch.job_publish(job=job)
    api.wait(str(job.id), until=lambda _: bool(scenario.requests))  # the second step's model call

    # When another message of the same hand-over arrives meanwhile (sent twice)
    outcome = run(message)

    # Then it runs nothing: the step is not run a second time at once
    assert outcome == "IGNORED"
    assert len(scenario.requests) == 1

    # ...and the job goes on from the step that runs, to its end
    answered.set()
    done = api.wait(str(job.id), timeout=60)
    assert (done["status"], done["result"]["checklist"]) == ("SUCCESS", [{"task": "Sign.", "is_complete": False}])
    assert len(scenario.requests) == 1


def test_a_message_of_a_hand_over_redelivered_after_its_run_was_cut_off_runs_the_step_again(db: Any) -> None:
    # Given a job whose handed-over second step a message started, its worker then killed
    owner = client_create(name="hand-over-redelivered")
    job = Job.objects.create(owner=owner, job_name=CHECKLIST, status=Job.Status.STARTED, started_at=timezone.now())
    handed_at = timezone.now()
    assert hand_overs.job_step_hand_over(job_id=job.id, step=1, step_input={}, dispatched_at=handed_at)
    assert hand_overs.job_step_start(job_id=job.id, step=1, dispatched_at=handed_at, redelivered=False)

    # When the broker delivers its message again, once the killed run's heartbeat is stale
    with pytest.raises(leases.StepLeased):  # before then, as a live run's, it waits
        hand_overs.job_step_start(job_id=job.id, step=1, dispatched_at=handed_at, redelivered=True)
    stale = timezone.now() - timedelta(seconds=settings.JOB_STEP_LEASE_SECONDS + 1)
    Job.objects.filter(pk=job.pk).update(step_heartbeat_at=stale)
    again = hand_overs.job_step_start(job_id=job.id, step=1, dispatched_at=handed_at, redelivered=True)

    # Then the step runs again, as a first step's message delivered again does; a copy the broker
    # did not redeliver does not
    assert again is not None and again.step_started_at is not None
    with pytest.raises(transitions.StaleMessage):
        hand_overs.job_step_start(job_id=job.id, step=1, dispatched_at=handed_at, redelivered=False)


def test_a_retry_the_broker_refused_is_published_by_the_sweeper_once_due_and_runs_once(
    db: Any, fake_openai: FakeOpenAI, step_messages: list[dict[str, Any]], settings: Any
) -> None:
    # Given a checklist job allowed two runs a minute apart, whose model first answers something
    # the job cannot use, and a sweep every two minutes: the retry is due within one, so it is
    # published as a countdown message (a later one waits on the row: test_retry_backoff.py)
    settings.JOB_DISPATCH_SWEEP_SECONDS = 120
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
    assert abandoned.jobs_fail_abandoned() == 0

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


@pytest.fixture
def second_progress_fails_once() -> Iterator[None]:
    """The database fails the first write of a job's progress to 2 (the checklist's second step
    reporting it), as a PostgreSQL restart cuts a step's next query: a trigger raising the error
    of a session the server ended (an OperationalError), once (a sequence counts, whatever rolls
    back)."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE SEQUENCE test_progress_failures")
        cursor.execute("""
            CREATE FUNCTION test_progress_fails_once() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.progress ->> 'current' = '2' AND nextval('test_progress_failures') = 1 THEN
                    RAISE EXCEPTION 'terminating connection due to administrator command' USING ERRCODE = '57P01';
                END IF;
                RETURN NEW;
            END $$
        """)
        cursor.execute("CREATE TRIGGER test_progress_fails_once BEFORE UPDATE OF progress ON jobs_job "
                       "FOR EACH ROW EXECUTE FUNCTION test_progress_fails_once()")
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER IF EXISTS test_progress_fails_once ON jobs_job")
        cursor.execute("DROP FUNCTION IF EXISTS test_progress_fails_once()")
        cursor.execute("DROP SEQUENCE IF EXISTS test_progress_failures")


def test_a_handed_over_step_the_database_failed_mid_run_is_run_again_by_its_retry(
    api: Api, fake_openai: FakeOpenAI, second_progress_fails_once: None, celery_worker_log: Path
) -> None:
    # Given a checklist job whose second step, handed over, is sent to the worker, and the
    # database failing that step's first write (its progress), as a restart would
    scenario = fake_openai.scenario()
    summary = f"Sign the record. ({scenario.token})"
    scenario.add(Reply.answer({"checklist": [{"task": "Sign."}]}))
    job = Job.objects.create(owner=api.client, job_name=CHECKLIST, status=Job.Status.STARTED,
                             started_at=timezone.now(), payload={"guidelines": f"Sign. ({scenario.token})"})
    assert hand_overs.job_step_hand_over(job_id=job.id, step=1, step_input={"summary": summary},
                                         dispatched_at=timezone.now())
    job.refresh_from_db()

    # When its message runs the step, which the task retries on the DatabaseError (a new message
    # of the same hand-over, not one the broker redelivered)
    dispatch.job_publish(job=job)

    # Then the retry runs the step again, and the job goes on to its end
    done = api.wait(str(job.id), timeout=60)
    assert (done["status"], done["result"]["checklist"]) == ("SUCCESS", [{"task": "Sign.", "is_complete": False}])
    assert len(scenario.requests) == 1
    # and the worker's log says so once, naming the job (Celery's own line for a retry is INFO,
    # on a logger kept at WARNING: a PostgreSQL restart under a running job left no line of it)
    [line] = [text for text in celery_worker_log.read_text().splitlines()
              if "the database failed" in text and f"job_id={job.id}" in text]
    assert "[warning" in line, line
    assert "Task jobs.run_step step 1: the database failed (terminating connection due to administrator command); it runs " \
        "again in 2 s (retry 1 of 25)" in line, line
