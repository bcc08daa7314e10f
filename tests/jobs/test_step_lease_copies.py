"""A copy of a running step's message that finds the step's lease held (jobs/leases.py): it
writes nothing on the job's row, and waits for the live run without being lost, even when the
broker refuses its look again; it says so at WARNING once, not at every look."""
from __future__ import annotations

import logging
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from celery.exceptions import Reject
from celery.signals import before_task_publish
from django.utils import timezone

from core.models import Client
from jobs import dispatch, hand_overs, leases, tasks
from jobs.models import Job
from tests.conftest import broker_refusing

CHECKLIST = "api.tasks.generate_checklist_from_guidelines"


def test_a_copy_refused_the_lease_leaves_the_steps_start_as_it_was(db: Any) -> None:
    # Given a handed-over step a worker started a minute ago and runs still, its heartbeat fresh
    now = timezone.now()
    started = now - timedelta(minutes=1)
    job = Job.objects.create(owner=Client.objects.create(name="lease-copies"), job_name=CHECKLIST,
                             payload={"guidelines": "Sign."}, status=Job.Status.STARTED, started_at=started,
                             next_step=1, dispatched_at=started, step_started_at=started, step_heartbeat_at=now)

    # When a redelivered copy of its message looks
    with pytest.raises(leases.StepLeased):
        hand_overs.job_step_start(job_id=job.id, step=1, dispatched_at=started, redelivered=True)

    # Then it wrote nothing: the step's start (from which the abandoned-job rule counts) and its
    # heartbeat are the live run's
    after = Job.objects.get(pk=job.id)
    assert (after.step_started_at, after.step_heartbeat_at) == (started, now)


def test_a_copy_whose_look_again_the_broker_refuses_is_requeued_not_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a redelivered copy of a step's message, run as a worker runs it, that finds the
    # step's lease held
    def leased(*args: Any) -> None:
        raise leases.StepLeased(5.0)

    monkeypatch.setattr(tasks, "_step_start", leased)
    task, kwargs = tasks.job_run_step, {"job_id": str(uuid.uuid4()), "index": 1}
    task.push_request(id=str(uuid.uuid4()), args=(None,), kwargs=kwargs, retries=0, called_directly=False,
                      is_eager=False, delivery_info={"redelivered": True})
    try:
        # When the broker refuses its look again (the retry's message)
        began = time.monotonic()
        with broker_refusing(), pytest.raises(Reject) as rejected:
            task.run(None, **kwargs)
    finally:
        task.pop_request()

    # Then its message is handed back to the broker to keep (requeued), not dropped, after a
    # pause of about a second (not at once, to be redelivered as fast as it is refused)
    assert rejected.value.requeue is True
    assert time.monotonic() - began >= tasks._REQUEUE_PAUSE_SECONDS


def test_a_copys_later_looks_for_the_lease_are_logged_at_info(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a redelivered copy of a step's message that finds the step's lease held at each look
    def leased(*args: Any) -> None:
        raise leases.StepLeased(5.0)

    monkeypatch.setattr(tasks, "_step_start", leased)
    sent: list[dict[str, Any]] = []

    def record(sender: str, headers: dict[str, Any], **kwargs: Any) -> None:
        if sender == dispatch.RUN_STEP_TASK:
            sent.append(dict(headers))

    def look(headers: dict[str, Any]) -> None:
        """One look, run as a worker runs a message with these headers."""
        task, kwargs = tasks.job_run_step, {"job_id": str(uuid.uuid4()), "index": 1}
        task.push_request(**{**headers, "id": str(uuid.uuid4()), "args": (None,), "kwargs": kwargs,
                             "called_directly": False, "is_eager": False, "delivery_info": {"redelivered": True}})
        try:
            with pytest.raises(Reject):
                task.run(None, **kwargs)
        finally:
            task.pop_request()

    # When it looks, then looks again as the message its look sent (which the broker refuses:
    # none is left queued)
    before_task_publish.connect(record, weak=False)
    try:
        with broker_refusing(), caplog.at_level(logging.INFO, logger="jobs.tasks"):
            look({"retries": 0})
            look(sent[-1])
    finally:
        before_task_publish.disconnect(record)

    # Then its first look says so at WARNING, the next at INFO (a WARNING each lease while the
    # live run lasted said nothing new)
    looks = [line.levelname for line in caplog.records if "another run of it is alive" in line.getMessage()]
    assert looks == ["WARNING", "INFO"]
