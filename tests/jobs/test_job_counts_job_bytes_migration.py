"""The job storage quota's migration (jobs 0024) run beside the jobs' traffic: a transition under
way while it adds the count's column waits for it, rather than deadlocking with it."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from django.core.management import call_command
from django.db import connection, connections, transaction
from django.db.migrations.executor import MigrationExecutor

from core.services import client_create
from jobs import sql
from jobs.models import Job, JobCounts

pytestmark = pytest.mark.django_db(transaction=True)

S = Job.Status


@pytest.fixture
def before_0024() -> Iterator[None]:
    call_command("migrate", "jobs", "0023", verbosity=0)
    yield
    call_command("migrate", verbosity=0)  # every app, any unapplied with 0024 too


def waiting_on_a_lock() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM pg_locks WHERE NOT granted")
        (waiting,) = cursor.fetchone()
    return int(waiting)


def until(condition: object, *, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.02)


def test_a_transition_during_the_migration_waits_for_it_rather_than_deadlocking(before_0024: None) -> None:
    # Given a client's unfinished job, and a transaction reading its count row (a batch
    # submission's lock), so that the migration's change of the counts table waits
    owner = client_create(name="busy")
    # (written as 0023 left the jobs table: without its later columns, 0026's step_heartbeat_at)
    state = MigrationExecutor(connection).loader.project_state(("jobs", "0023_results_count_per_statement"))
    jobs = state.apps.get_model("jobs", "Job")
    job = jobs.objects.create(owner_id=owner.pk, job_name="api.tasks.hello_world", payload={"n": 1})
    reader_holds, reader_done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        with transaction.atomic():
            list(JobCounts.objects.select_for_update().filter(owner=owner).values_list("pk"))
            reader_holds.set()
            reader_done.wait(10)
        connections.close_all()

    def migrate() -> None:
        try:
            call_command("migrate", "jobs", "0024", verbosity=0)
        except BaseException as exc:  # noqa: BLE001 (reported by the test)
            errors.append(exc)
        finally:
            connections.close_all()

    def start() -> None:
        try:
            Job.objects.filter(pk=job.pk).update(status=S.STARTED)
        except BaseException as exc:  # noqa: BLE001 (reported by the test)
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=reader)]
    threads[0].start()
    assert reader_holds.wait(10)

    # When the migration runs (waiting for the reader), then the job starts meanwhile
    threads.append(threading.Thread(target=migrate))
    threads[1].start()
    until(lambda: waiting_on_a_lock() >= 1)
    threads.append(threading.Thread(target=start))
    threads[2].start()
    until(lambda: waiting_on_a_lock() >= 2)
    reader_done.set()
    for thread in threads:
        thread.join(30)

    # Then both went through, one after the other (the start was refused "deadlock detected" when
    # the migration changed the counts table before locking the jobs table: the triggers' making
    # waited for the started job as its trigger waited for the counts table), and the counts are
    # the rows'
    assert errors == []
    assert Job.objects.filter(pk=job.pk).values_list("status", flat=True).get() == S.STARTED
    counts = JobCounts.objects.get(owner=owner)
    assert (counts.unfinished, counts.running, counts.result_bytes, counts.job_bytes) == sql.owner_counts_counted(
        owner.pk
    )
