"""A running step's lease (jobs/leases.py) when the database fails under it: its connection's
backend terminated (as a PostgreSQL restart does), and the lease's retries (jobs/tasks.py); and
when its heartbeat thread cannot start."""
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from django.db import OperationalError, connection, connections
from django.utils import timezone

from core.models import Client
from jobs import dispatch, leases, tasks
from jobs.models import Job


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def terminated(pids: str) -> int:
    """Terminate the backends `pids` (a query on pg_stat_activity) from a connection of its own;
    how many."""
    killed: list[int] = []

    def terminate() -> None:
        try:
            with connections["default"].cursor() as cursor:
                cursor.execute(f"SELECT count(pg_terminate_backend(pid)) FROM ({pids}) AS killed")
                killed.append(cursor.fetchone()[0])
        finally:
            connections.close_all()

    killer = threading.Thread(target=terminate)
    killer.start()
    killer.join()
    return killed[0]


@pytest.fixture
def running_job(transactional_db: Any) -> Iterator[Job]:
    owner = Client.objects.create(name=f"owner-{uuid.uuid4()}")
    yield Job.objects.create(owner=owner, job_name="api.tasks.generate_checklist_from_guidelines",
                             status=Job.Status.STARTED, payload={})
    connection.close()  # a test may leave it broken: the flush connects again


def test_a_step_whose_connection_was_terminated_raises_the_database_error(running_job: Job) -> None:
    # Given a step holding its lease, its connection open
    pid = backend_pid()

    # When its backend is terminated (a PostgreSQL restart) before its next query
    with pytest.raises(OperationalError), leases.step_lease_kept(job_id=running_job.id):
        terminated(f"SELECT {pid} AS pid")
        Job.objects.get(pk=running_job.id)

    # Then the database's error is what the step raises (the task retries it), not the
    # InterfaceError of a write on the closed connection, which the task took for the job's failure


def test_the_heartbeat_goes_on_after_its_connection_was_terminated(running_job: Job, settings: Any) -> None:
    # Given a step holding its lease, whose heartbeat thread beat once (a beat a second)
    settings.JOB_STEP_LEASE_SECONDS = 3
    with leases.step_lease_kept(job_id=running_job.id):
        beat = heartbeat_after(running_job, None)

        # When the heartbeat thread's backend is terminated (a PostgreSQL restart); its alone:
        # the suite's worker and servers share the database
        beating = ("SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND query LIKE "
                   f"'UPDATE %step_heartbeat_at%{running_job.id}%'")
        assert terminated(beating) == 1

        # Then the heartbeat goes on: the thread connects again
        heartbeat_after(running_job, beat)


def heartbeat_after(job: Job, last: datetime | None) -> datetime:
    deadline = time.monotonic() + 30
    while True:
        beat = Job.objects.values_list("step_heartbeat_at", flat=True).get(pk=job.id)
        if beat is not None and (last is None or beat > last):
            return beat
        assert time.monotonic() < deadline, "the heartbeat stopped"
        time.sleep(0.2)


def test_a_wait_for_a_lease_leaves_the_next_runs_database_retries_as_they_were(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a pool process whose run of a step waited once for another run's lease
    runs: list[int] = []

    def leased_once(task: Any, *args: Any) -> None:
        runs.append(task.request.retries)
        if len(runs) == 1:
            raise leases.StepLeased(1.0)

    monkeypatch.setattr(tasks, "_step_start", leased_once)
    tasks.job_run_step.apply(kwargs={"job_id": str(uuid.uuid4()), "index": 0})

    # When its next run of a step finds the database unreachable, every time
    def unreachable(task: Any, *args: Any) -> None:
        runs.append(task.request.retries)
        raise OperationalError("the database is unreachable")

    runs.clear()
    monkeypatch.setattr(tasks, "_step_start", unreachable)
    tasks.job_run_step.apply(kwargs={"job_id": str(uuid.uuid4()), "index": 0})

    # Then it is retried as many times as any run's (25), not as many as the lease's wait allowed
    assert len(runs) == tasks._MAX_TASK_RETRIES + 1


def test_a_heartbeat_that_cannot_start_runs_the_step_again_rather_than_fail_the_job(
    transactional_db: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a job of one step waiting for its message, in a worker that can start no thread for
    # the step's lease, once (at its limit of processes: "can't start new thread")
    job = Job.objects.create(owner=Client.objects.create(name=f"owner-{uuid.uuid4()}"),
                             job_name="api.tasks.hello_world", payload={"message": "q"}, dispatched_at=timezone.now())
    refused: list[str] = []
    start = threading.Thread.start

    def start_once(thread: threading.Thread) -> None:
        if thread.name.startswith("lease-") and not refused:
            refused.append(thread.name)
            raise RuntimeError("can't start new thread")
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", start_once)

    # When its message runs the step
    tasks.job_run_step.apply(args=(job.step_input,), kwargs=dispatch.job_signatures(job=job)[0].kwargs)

    # Then the task ran it again (the worker's trouble, not the job's), and the job succeeded,
    # where it failed RuntimeError
    job.refresh_from_db()
    assert refused and (job.status, job.error) == (Job.Status.SUCCESS, None)
    # And the worker's log says why it ran twice
    assert [record.levelname for record in caplog.records if "heartbeat thread could not start" in record.getMessage()] \
        == ["WARNING"]
