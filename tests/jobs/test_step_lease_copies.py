"""A copy of a running step's message that finds the step's lease held (jobs/leases.py): it
writes nothing on the job's row."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from core.models import Client
from jobs import hand_overs, leases
from jobs.models import Job

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

