"""The abandoned-job rule (jobs.fail_abandoned) fails a job whose worker vanished, never one that
is only waiting out its own retry backoff, running a later attempt, or whose retry no worker has
started (its message waits in a queue, or was lost: the sweeper publishes it again)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.test import Client as DjangoClient
from django.utils import timezone

from core.services import api_key_create, client_create
from jobs import abandoned, dispatch, hand_overs, transitions
from jobs.models import Job
from jobs.registry import job_type_get

CHECKLIST = "api.tasks.generate_checklist_from_guidelines"


@dataclass
class Retried:
    job: Job
    http: DjangoClient
    # The rule's limit for this type: visibility timeout + its steps' hard time limits + 60 s.
    limit: timedelta

    def seen(self) -> dict[str, Any]:
        return self.http.get(f"/api/jobs/{self.job.id}/").json()

    def first_started(self, ago: timedelta) -> None:
        Job.objects.filter(pk=self.job.pk).update(started_at=timezone.now() - ago)

    def attempt_started(self, ago: timedelta) -> None:
        """Its latest attempt's message, which the sweeper published once it was due, started it
        `ago` (and the run goes on, or its worker vanished)."""
        Job.objects.filter(pk=self.job.pk).update(retry_at=timezone.now(), dispatched_at=timezone.now())
        self.job.refresh_from_db()
        assert hand_overs.job_step_start(job_id=self.job.id, step=0, dispatched_at=self.job.dispatched_at,
                                         redelivered=False)
        transitions.job_set_retrying(job_id=self.job.id, retrying=False)
        Job.objects.filter(pk=self.job.pk).update(step_started_at=timezone.now() - ago)


@pytest.fixture
def retried(db: Any) -> Retried:
    """A checklist job (5 attempts, an hour between them) that failed three times: RETRY, its
    4th attempt due in an hour. In the test's transaction, out of the shared beat's sight."""
    owner = client_create(name="retried")
    job = Job.objects.create(owner=owner, job_name=CHECKLIST, dispatched_at=timezone.now(),
                             max_attempts=5, retry_backoff_seconds=3600)
    transitions.job_start(job_id=job.id)
    for attempt in (2, 3, 4):
        if attempt > 2:
            transitions.job_set_retrying(job_id=job.id, retrying=False)  # the retry runs, and fails
        error = {"type": "RateLimitError", "message": "slow"}
        assert transitions.job_retry_later(job_id=job.id, error=error, step=0, step_input=None)
    job_type = job_type_get(CHECKLIST)
    limit = settings.CELERY_BROKER_VISIBILITY_TIMEOUT_SECONDS + len(job_type.steps) * job_type.time_limit_seconds + 60
    retried = Retried(job, DjangoClient(HTTP_AUTHORIZATION=f"Bearer {api_key_create(client=owner)}"),
                      timedelta(seconds=limit))
    assert (retried.seen()["status"], retried.seen()["attempt"]) == ("RETRY", 4)
    return retried


def test_a_job_waiting_out_its_retry_backoff_is_not_abandoned(retried: Retried) -> None:
    # Given its first run started longer ago than the rule's limit (three hours of backoff since)
    retried.first_started(ago=retried.limit + timedelta(seconds=150))

    # When the rule runs
    assert abandoned.jobs_fail_abandoned() == 0

    # Then the job still waits for its 4th attempt
    seen = retried.seen()
    assert (seen["status"], seen["attempt"], seen["error"]["type"]) == ("RETRY", 4, "RateLimitError")


def test_a_later_attempt_that_runs_is_not_abandoned(retried: Retried) -> None:
    # Given its 4th attempt runs, its first run long ago
    retried.attempt_started(ago=timedelta(0))
    retried.first_started(ago=retried.limit + timedelta(hours=1))

    assert abandoned.jobs_fail_abandoned() == 0

    assert retried.seen()["status"] == "STARTED"


def test_a_retry_no_worker_started_is_left_to_the_sweeper_not_failed(retried: Retried) -> None:
    # Given its retry (handed to the broker an hour before) fell due longer ago than the rule's
    # limit, and no worker started it: its message waits in a long queue, or was lost
    due = timezone.now() - retried.limit - timedelta(seconds=1)
    Job.objects.filter(pk=retried.job.pk).update(retry_at=due, dispatched_at=due - timedelta(hours=1))
    retried.first_started(ago=retried.limit + timedelta(hours=4))

    # Then the rule does not fail it, nor does the sweeper take its message for lost yet
    assert abandoned.jobs_fail_abandoned() == 0
    assert dispatch.job_steps_release_stranded() == 0
    assert retried.seen()["status"] == "RETRY"

    # ...until it has gone unstarted JOB_DISPATCH_LOST_AFTER_SECONDS since it fell due: the
    # sweeper then publishes it again
    due = timezone.now() - timedelta(seconds=settings.JOB_DISPATCH_LOST_AFTER_SECONDS + 1)
    Job.objects.filter(pk=retried.job.pk).update(retry_at=due, dispatched_at=due - timedelta(hours=1))
    assert dispatch.job_steps_release_stranded() == 1
    assert abandoned.jobs_fail_abandoned() == 0


def test_a_retry_whose_worker_vanished_is_still_failed(retried: Retried) -> None:
    # Given its retry started longer ago than the rule's limit, and never ended
    retried.attempt_started(ago=retried.limit + timedelta(seconds=1))
    retried.first_started(ago=retried.limit + timedelta(hours=4))

    assert abandoned.jobs_fail_abandoned() == 1

    seen = retried.seen()
    assert (seen["status"], seen["error"]["type"]) == ("FAILURE", "worker_lost")
