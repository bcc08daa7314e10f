"""jobapi_oldest_pending_job_age_seconds (JobsPendingTooLong) and the console's oldest pending jobs
count the jobs waiting for a worker, not those a client's own running job holds at its running
cap (JOB_MAX_RUNNING_PER_CLIENT): one client's hour-long job fired the alert after 10 minutes,
though every other client's jobs started at once."""
from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.test import Client as BrowserClient
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from jobs.models import Job
from tests.conftest import Api

HELLO = "api.tasks.hello_world"
TOKEN = {"HTTP_AUTHORIZATION": "Bearer test-metrics-token"}


def oldest_pending_age() -> float:
    response = BrowserClient().get("/metrics", **TOKEN)
    assert response.status_code == 200
    [age] = [sample.value for family in text_string_to_metric_families(response.content.decode())
             for sample in family.samples if sample.name == "jobapi_oldest_pending_job_age_seconds"]
    return age


def oldest_pending_shown(staff: BrowserClient) -> str:
    html = staff.get("/console/").content.decode()
    return html.split('<section id="oldest-pending">', 1)[1].split("</section>", 1)[0]


def handed_over(owner: Any, *, minutes: int) -> Job:
    """A job of `owner` handed to the broker `minutes` ago (so the suite's sweeper leaves it), its
    message never sent: no worker has taken it."""
    since = timezone.now() - timedelta(minutes=minutes)
    return Job.objects.create(owner=owner, job_name=HELLO, created_at=since, dispatched_at=since)


@pytest.fixture
def held(api: Api) -> Iterator[Job]:
    """A job of a client at its running cap (the suite's, 8, in this process and its worker alike),
    which the suite's worker took and put back to wait for dispatch; made due 10 minutes ago."""
    cap = settings.JOB_MAX_RUNNING_PER_CLIENT
    now = timezone.now()
    Job.objects.bulk_create([Job(owner=api.client, job_name=HELLO, status=Job.Status.STARTED, started_at=now,
                                 dispatched_at=now) for _ in range(cap)])  # running on other workers
    assert api.get("/api/limits/").json()["running_jobs"] == {"limit": cap, "used": cap}
    job = api.submit(HELLO)
    deadline = time.monotonic() + 30
    while Job.objects.filter(pk=job["id"], dispatched_at__isnull=False).exists():
        assert time.monotonic() < deadline, "the worker did not put the job back"
        time.sleep(0.05)
    Job.objects.filter(pk=job["id"]).update(created_at=now - timedelta(minutes=10))
    yield Job.objects.get(pk=job["id"])
    Job.objects.filter(owner=api.client).delete()


def test_a_job_held_at_its_clients_running_cap_does_not_count_as_waiting(held: Job, staff: BrowserClient) -> None:
    # Given a client at its running cap, whose later job, due 10 minutes ago, the worker put back to wait

    # When /metrics is scraped and the console shown
    age = oldest_pending_age()
    shown = oldest_pending_shown(staff)

    # Then no job waits for a worker: the held job waits for its client's own job to end
    assert age == 0
    assert str(held.pk) not in shown and "No job is waiting for a worker" in shown
    assert Job.objects.get(pk=held.pk).status == Job.Status.PENDING


def test_a_job_no_worker_has_taken_counts_as_waiting(held: Job, make_api: Any, staff: BrowserClient) -> None:
    # Given a client at its running cap with a job held 10 minutes, and another client's job
    # handed to the broker 2 minutes ago, which no worker has taken
    late = handed_over(make_api().client, minutes=2)

    # When /metrics is scraped and the console shown
    age = oldest_pending_age()
    shown = oldest_pending_shown(staff)

    # Then the other client's job is the one waiting longest, for 2 minutes
    assert 2 * 60 <= age < 3 * 60
    assert f"/admin/jobs/job/{late.pk}/change/" in shown and str(held.pk) not in shown
