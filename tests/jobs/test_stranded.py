"""A job whose first message was lost (its worker gave it up after PostgreSQL stayed down past the
step's retries) is published again by the sweeper, and runs once whichever of its two messages
arrives first."""
from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client as DjangoClient
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.services import api_key_create, client_create
from jobs import dispatch, tasks, transitions
from jobs.models import Job
from tests.conftest import Api, plan_of, plan_rows_read

HELLO = "api.tasks.hello_world"


@contextmanager
def database_unreachable() -> Iterator[None]:
    """This thread's database connection points at a port nothing listens on, as a worker sees
    PostgreSQL during an outage (a real refused connection); the live server's and the shared
    worker's connections are untouched."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    real = connection.settings_dict
    connection.close()
    connection.settings_dict = {**real, "HOST": "127.0.0.1", "PORT": str(dead_port)}
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict = real


def first_message(job: Job) -> dict[str, Any]:
    """The arguments of the job's first message, as the dispatch that published it wrote them."""
    job.refresh_from_db()
    return dispatch.job_signatures(job=job)[0].kwargs


def published(job: Job, ago: timedelta) -> None:
    """As if the job was accepted and handed to the broker `ago`, and has not started since."""
    Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - ago, dispatched_at=timezone.now() - ago)


def test_a_job_whose_worker_gave_up_during_a_long_outage_runs_once_the_database_is_back(api: Api) -> None:
    # Given a job handed to the broker, whose message a worker takes while PostgreSQL is down
    job = Job.objects.create(owner=api.client, job_name=HELLO, payload={"message": "back"},
                             dispatched_at=timezone.now())
    message = first_message(job)
    with database_unreachable():
        # ...and whose last database retry fails too: the message is acked as failed.
        outcome = tasks.job_run_step.apply(kwargs=message, retries=tasks._MAX_TASK_RETRIES)
    assert outcome.state == "FAILURE"
    stranded = api.get(f"/api/jobs/{job.id}/").json()
    assert (stranded["status"], stranded["started_at"]) == ("PENDING", None)

    # When the time for its message to be taken for lost has passed (a day; 6 h by default: the
    # shared worker's beat runs the sweep every second)
    published(job, ago=timedelta(days=1))

    # Then it is published again and runs
    done = api.wait(str(job.id), timeout=60)
    assert (done["status"], done["result"]) == ("SUCCESS", "hello world back")


@dataclass
class Stranded:
    job: Job
    lost: dict[str, Any]  # its first message
    http: DjangoClient

    def status(self) -> str:
        return self.http.get(f"/api/jobs/{self.job.id}/").json()["status"]


@pytest.fixture
def stranded(db: Any) -> Stranded:
    """A job handed to the broker a day ago that never started, its first message taken for lost
    and the job published again by the sweep. In the test's transaction: the shared worker and
    beat, if they run, never see it, so the test delivers its messages itself."""
    owner = client_create(name="stranded")
    job = Job.objects.create(owner=owner, job_name=HELLO, payload={"message": "once"}, dispatched_at=timezone.now())
    published(job, ago=timedelta(hours=1))
    assert tasks.jobs_dispatch_sweep.apply().get() == 0  # an hour in the queue: it keeps its message

    published(job, ago=timedelta(days=1))
    lost = first_message(job)
    assert tasks.jobs_dispatch_sweep.apply().get() == 1

    assert first_message(job) != lost  # a new dispatch
    return Stranded(job, lost, DjangoClient(HTTP_AUTHORIZATION=f"Bearer {api_key_create(client=owner)}"))


def test_the_first_message_of_a_job_published_again_does_nothing_when_it_arrives_first(stranded: Stranded) -> None:
    # Given a job whose first message was only waiting in a long queue, and was published again
    # When that first message arrives after all
    tasks.job_run_step.apply(kwargs=stranded.lost)

    # Then it does not start the job; the new message runs it
    assert stranded.status() == "PENDING"
    tasks.job_run_step.apply(kwargs=first_message(stranded.job))
    assert stranded.status() == "SUCCESS"


def test_the_first_message_of_a_job_published_again_does_not_run_it_again_once_it_runs(stranded: Stranded) -> None:
    # Given a job published again, whose new message has started it (its step still running)
    current = first_message(stranded.job)
    assert transitions.job_start(job_id=stranded.job.id, dispatched_at=datetime.fromisoformat(current["dispatched_at"]))

    # When its first message arrives
    outcome = tasks.job_run_step.apply(kwargs=stranded.lost)

    # Then the step is not run a second time (a message of the current dispatch delivered again
    # would be: that is how a lost worker's job runs again)
    assert outcome.state == "IGNORED"
    assert stranded.status() == "STARTED"


def test_the_look_for_lost_messages_reads_none_of_the_jobs_waiting_for_dispatch(db: Any) -> None:
    # Given a client's jobs accepted a day ago and waiting for dispatch (scheduled for tomorrow:
    # as many wait at a running cap), and one job handed to the broker a day ago that never started
    owner = client_create(name="stranded-beside-a-backlog")
    day_ago, tomorrow = timezone.now() - timedelta(days=1), timezone.now() + timedelta(days=1)
    Job.objects.bulk_create([
        Job(owner=owner, job_name=HELLO, created_at=day_ago, run_at=tomorrow) for _ in range(300)
    ])
    lost = Job.objects.create(owner=owner, job_name=HELLO, dispatched_at=timezone.now())
    published(lost, ago=timedelta(days=1))
    look = _statements_of_one_found(dispatch.jobs_release_stranded)[0]

    # When the sweeper's look is run again as it was, where the table is too small for
    # PostgreSQL to prefer an index on its own
    plan = plan_of(look, analyze=True, seqscan=False)

    # Then it reads the jobs in the broker only: not one of the waiting jobs read and dropped
    assert "Index Scan using job_in_broker" in plan, plan
    assert "Rows Removed by Filter" not in plan, plan


def test_the_look_for_lost_step_messages_reads_none_of_the_steps_that_run(db: Any) -> None:
    # Given 300 running jobs whose handed-over step started a day ago (long steps), and one whose
    # step was handed to the broker a day ago and never started
    owner = client_create(name="step-stranded-beside-running-steps")
    day_ago = timezone.now() - timedelta(days=1)
    Job.objects.bulk_create([
        Job(owner=owner, job_name=HELLO, status=Job.Status.STARTED, started_at=day_ago, next_step=1,
            dispatched_at=day_ago, step_started_at=day_ago) for _ in range(300)
    ])
    Job.objects.create(owner=owner, job_name=HELLO, status=Job.Status.STARTED, started_at=day_ago, next_step=1,
                       dispatched_at=day_ago)
    look = _statements_of_one_found(dispatch.job_steps_release_stranded)[0]

    # When the sweeper's look is run again as it was, where the table is too small for
    # PostgreSQL to prefer an index on its own
    plan = plan_of(look, analyze=True, seqscan=False)

    # Then it reads the steps in the broker only: not one of the running steps read and dropped
    assert "Index Scan using job_step_in_broker" in plan, plan
    assert "Rows Removed by Filter" not in plan, plan


def test_the_look_for_steps_to_publish_reads_none_of_the_retries_not_due(db: Any) -> None:
    # Given 300 running jobs waiting out an hour's retry backoff on their row (a model provider's
    # outage failed them all), and one whose retry is due
    owner = client_create(name="retries-waiting-beside-one-due")
    now = timezone.now()
    Job.objects.bulk_create([
        Job(owner=owner, job_name=HELLO, status=Job.Status.RETRY, started_at=now, next_step=0,
            retry_at=now + timedelta(hours=1)) for _ in range(300)
    ])
    due = Job.objects.create(owner=owner, job_name=HELLO, status=Job.Status.RETRY, started_at=now, next_step=0,
                             retry_at=now)
    [look] = [sql for sql in _statements_of_one_found(dispatch.job_steps_publish_waiting) if "FOR UPDATE" in sql]
    due.refresh_from_db()
    assert due.dispatched_at is not None

    # When the sweeper's look is run again as it was, where the table is too small for
    # PostgreSQL to prefer an index on its own
    Job.objects.filter(pk=due.pk).update(dispatched_at=None)
    plan = plan_of(look, analyze=True, seqscan=False)

    # Then it reads the due retry only: not one of the waiting ones read and dropped
    assert "job_step_due" in plan, plan
    assert plan_rows_read(plan, "jobs_job") == 1, plan


def _statements_of_one_found(sweep: Callable[[], int]) -> list[str]:
    """The statements a sweeper's step ran, the jobs table analyzed first, having found one job."""
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE jobs_job")
    with CaptureQueriesContext(connection) as queries:
        assert sweep() == 1
    return [query["sql"] for query in queries.captured_queries]
