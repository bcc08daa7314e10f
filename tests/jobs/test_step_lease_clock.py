"""A running step's lease (jobs/leases.py) is kept by the database's clock: a worker whose clock
runs ahead or behind (a host that drifted) neither takes a live run's lease for stale nor writes
heartbeats already stale. The hosts are this process with timezone.now() moved."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db.models.functions import Now
from django.utils import timezone

from core.models import Client
from jobs import hand_overs, leases, transitions
from jobs.models import Job
from tests.conftest import script_output

CHECKLIST = "api.tasks.generate_checklist_from_guidelines"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """Move this process's clock (timezone.now) `seconds` ahead of the database's (behind: negative)."""
    real = timezone.now

    def moved(seconds: float) -> None:
        monkeypatch.setattr(timezone, "now", lambda: real() + timedelta(seconds=seconds))

    return moved


def database_now() -> datetime:
    return Client.objects.annotate(now=Now()).values_list("now", flat=True)[:1].get()


def a_job(**fields: Any) -> Job:
    owner = Client.objects.create(name="lease-clock")
    return Job.objects.create(owner=owner, job_name=CHECKLIST, payload={"guidelines": "Sign."}, **fields)


def first_step_copy(job: Job) -> None:
    transitions.job_start(job_id=job.id, dispatched_at=job.dispatched_at)


def handed_over_step_copy(job: Job) -> None:
    hand_overs.job_step_start(job_id=job.id, step=1, dispatched_at=job.dispatched_at, redelivered=True)


@pytest.mark.parametrize("copy", [first_step_copy, handed_over_step_copy])
def test_a_copy_on_a_host_whose_clock_runs_ahead_finds_the_live_runs_lease_held(
    db: Any, clock: Callable[[float], None], copy: Callable[[Job], None]
) -> None:
    # Given a job whose step a worker runs, its heartbeat just written
    now = timezone.now()
    job = a_job(status=Job.Status.STARTED, started_at=now, dispatched_at=now, step_heartbeat_at=now,
                **({"next_step": 1, "step_started_at": now} if copy is handed_over_step_copy else {}))

    # When a copy of its message runs on a host whose clock is a minute ahead
    clock(60)
    with pytest.raises(leases.StepLeased) as held:
        copy(job)

    # Then it finds the lease held, and looks again once it could be stale: about a lease from
    # now, by the database's clock (it took the lease for stale, and ran the step beside the live run)
    assert settings.JOB_STEP_LEASE_SECONDS - 5 < held.value.wait_seconds <= settings.JOB_STEP_LEASE_SECONDS


def test_a_run_on_a_host_whose_clock_runs_behind_keeps_its_lease(db: Any, clock: Callable[[float], None]) -> None:
    # Given a job whose first step a worker started on a host whose clock is a minute behind
    job = a_job(dispatched_at=timezone.now())
    clock(-60)
    assert transitions.job_start(job_id=job.id, dispatched_at=job.dispatched_at) is not None

    # When a copy of its message runs on a host whose clock is right
    clock(0)

    # Then it finds the lease held (the heartbeat was written a minute old, stale at once)
    with pytest.raises(leases.StepLeased):
        first_step_copy(job)


def test_a_heartbeat_is_the_databases_time_whatever_the_hosts_clock(
    transactional_db: Any, clock: Callable[[float], None], settings: Any
) -> None:
    # Given a running step on a host whose clock is a minute behind, a beat a second
    settings.JOB_STEP_LEASE_SECONDS = 3
    job = a_job(status=Job.Status.STARTED)
    clock(-60)

    # When its heartbeat thread beats
    with leases.step_lease_kept(job_id=job.id):
        deadline = time.monotonic() + 10
        while (beat := Job.objects.values_list("step_heartbeat_at", flat=True).get(pk=job.id)) is None:
            assert time.monotonic() < deadline, "no heartbeat"
            time.sleep(0.1)

    # Then the heartbeat is the database's time, not the host's
    assert abs((database_now() - beat).total_seconds()) < 5


# `make run`'s embedded database: the lease's writes and checks by SQLite's clock.
EMBEDDED_LEASE_SCRIPT = """
import json
from datetime import timedelta
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.utils import timezone
from core.services import client_create
from jobs import hand_overs, leases, transitions
from jobs.models import Job
owner, now = client_create(name="embedded"), timezone.now()
first = Job.objects.create(owner=owner, job_name="api.tasks.hello_world", payload={"message": "q"}, dispatched_at=now)
handed = Job.objects.create(owner=owner, job_name="api.tasks.generate_checklist_from_guidelines",
                            payload={"guidelines": "Sign."}, status="STARTED", started_at=now, next_step=1,
                            dispatched_at=now, step_started_at=now)
def looked(job):
    try:
        if job is first:
            transitions.job_start(job_id=job.id, dispatched_at=now)
        else:
            hand_overs.job_step_start(job_id=job.id, step=1, dispatched_at=now, redelivered=True)
        return "ran"
    except leases.StepLeased as held:
        return round(held.wait_seconds)
seen = [looked(first), looked(first), looked(handed), looked(handed)]
Job.objects.update(step_heartbeat_at=timezone.now() - timedelta(seconds=20))
print(json.dumps(seen + [looked(first), looked(handed)]))
"""


def test_the_lease_works_on_make_runs_embedded_database(tmp_path: Path) -> None:
    # Given make run's SQLite database, a job to start and a running job's handed-over step
    # When copies of their messages look, then again once their heartbeats are 20 s old
    seen = script_output(EMBEDDED_LEASE_SCRIPT, database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}", data_dir=tmp_path)

    # Then each first look runs the step and takes its lease, the second waits about a lease (15 s),
    # and each runs it once the heartbeat is stale
    assert json.loads(seen) == ["ran", 15, "ran", 15, "ran", "ran"]
