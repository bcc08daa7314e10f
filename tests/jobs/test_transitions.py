"""The job state machine: forward only, and the first final state wins."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings

from core.services import client_create
from jobs import leases, transitions
from jobs.models import Job, JobResult

pytestmark = pytest.mark.django_db

S = Job.Status


@pytest.fixture
def job() -> Job:
    owner = client_create(name="owner")
    return Job.objects.create(owner=owner, job_name="api.tasks.save_task_result_test_task", dispatched_at=None)


def status(job: Job) -> str:
    job.refresh_from_db()
    return job.status


def test_pending_starts_then_succeeds(job: Job) -> None:
    assert transitions.job_start(job_id=job.id) is not None
    assert status(job) == S.STARTED

    assert transitions.job_finish(job_id=job.id, status=S.SUCCESS, result={"a": 1})

    assert status(job) == S.SUCCESS
    assert job.result == {"a": 1} and job.finished_at is not None
    assert JobResult.objects.get().result == {"a": 1}


def test_started_and_retry_go_back_and_forth(job: Job) -> None:
    transitions.job_start(job_id=job.id)

    transitions.job_set_retrying(job_id=job.id, retrying=True)
    assert status(job) == S.RETRY
    transitions.job_set_retrying(job_id=job.id, retrying=False)
    assert status(job) == S.STARTED


@pytest.mark.parametrize("first", [S.SUCCESS, S.FAILURE, S.REVOKED])
@pytest.mark.parametrize("second", [S.SUCCESS, S.FAILURE, S.REVOKED])
def test_the_first_final_state_wins(job: Job, first: str, second: str) -> None:
    transitions.job_start(job_id=job.id)
    assert transitions.job_finish(job_id=job.id, status=first, result="first", error=None)

    assert not transitions.job_finish(
        job_id=job.id, status=second, result="second", error={"type": "late", "message": "late"}
    )

    assert status(job) == first
    assert job.error is None
    assert JobResult.objects.count() == (1 if first == S.SUCCESS else 0)


def test_a_late_start_never_moves_a_final_job_back(job: Job) -> None:
    transitions.job_start(job_id=job.id)
    transitions.job_finish(job_id=job.id, status=S.SUCCESS, result=1)

    assert transitions.job_start(job_id=job.id) is None  # a duplicate message
    transitions.job_set_retrying(job_id=job.id, retrying=True)
    transitions.job_progress(job_id=job.id, current=1, total=2, message="late")

    assert status(job) == S.SUCCESS
    assert job.progress is None


def test_a_redelivered_start_keeps_the_first_start_time(job: Job) -> None:
    transitions.job_start(job_id=job.id)
    job.refresh_from_db()
    first_started = job.started_at

    with pytest.raises(leases.StepLeased):  # its run's heartbeat still fresh: it may be alive
        transitions.job_start(job_id=job.id)
    # requeued after a lost worker, once its run's heartbeat is stale
    stale = first_started - timedelta(seconds=settings.JOB_STEP_LEASE_SECONDS)
    Job.objects.filter(pk=job.pk).update(step_heartbeat_at=stale)
    assert transitions.job_start(job_id=job.id) is not None

    job.refresh_from_db()
    assert job.status == S.STARTED and job.started_at == first_started
    assert job.step_heartbeat_at > first_started  # the lease taken by the run starting now


def test_a_job_canceled_before_it_starts_never_starts(job: Job) -> None:
    transitions.job_cancel(owner=job.owner, job_id=job.id)

    assert transitions.job_start(job_id=job.id) is None
    assert status(job) == S.REVOKED
    assert job.started_at is None


def test_progress_is_recorded_only_while_running(job: Job) -> None:
    transitions.job_progress(job_id=job.id, current=1, total=3, message="too early")
    assert Job.objects.get(pk=job.pk).progress is None

    transitions.job_start(job_id=job.id)
    transitions.job_progress(job_id=job.id, current=1, total=3, message="one")

    assert Job.objects.get(pk=job.pk).progress == {"current": 1, "total": 3, "message": "one"}
