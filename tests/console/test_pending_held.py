"""jobapi_oldest_pending_job_age_seconds (JobsPendingTooLong) and the console's oldest pending jobs
count the jobs waiting for a worker, not those a client's own running job holds at its running
cap (JOB_MAX_RUNNING_PER_CLIENT): one client's hour-long job fired the alert after 10 minutes,
though every other client's jobs started at once."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
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


def waiting(owner: Any, *, minutes: int) -> Job:
    """A job of `owner` due `minutes` ago, handed to the broker (so the suite's sweeper leaves it)
    and never sent: no worker takes it."""
    now = timezone.now()
    return Job.objects.create(owner=owner, job_name=HELLO, created_at=now - timedelta(minutes=minutes), dispatched_at=now)


@pytest.fixture
def at_its_cap(api: Api, settings: Any) -> Iterator[Api]:
    """A client at a running cap of 1: its long job running on the suite's worker (whose own cap is
    8; the cap read here is this process's), canceled after the test."""
    settings.JOB_MAX_RUNNING_PER_CLIENT = 1
    long_job = api.submit("api.tasks.long_running_task", {"duration": 60, "message": "holds its client's place"})
    api.wait(long_job["id"], until=lambda job: job["status"] == "STARTED")
    assert api.get("/api/limits/").json()["running_jobs"] == {"limit": 1, "used": 1}
    yield api
    api.post(f"/api/jobs/{long_job['id']}/cancel/")
    api.wait(long_job["id"])


def test_a_job_held_at_its_clients_running_cap_does_not_count_as_waiting(at_its_cap: Api, staff: BrowserClient) -> None:
    # Given a client at its running cap, with a later job of its own due 10 minutes ago
    held = waiting(at_its_cap.client, minutes=10)

    # When /metrics is scraped and the console shown
    age = oldest_pending_age()
    shown = oldest_pending_shown(staff)

    # Then no job waits for a worker: the held job waits for its client's own job to end
    assert age == 0
    assert str(held.pk) not in shown and "No job is waiting for a worker" in shown
    assert Job.objects.get(pk=held.pk).status == Job.Status.PENDING


def test_a_job_of_a_client_under_its_cap_counts_as_waiting(
    at_its_cap: Api, make_api: Any, staff: BrowserClient
) -> None:
    # Given a client at its running cap with a job held 10 minutes, and another client, running
    # nothing, whose job due 2 minutes ago no worker has taken
    waiting(at_its_cap.client, minutes=10)
    other = make_api()
    late = waiting(other.client, minutes=2)

    # When /metrics is scraped and the console shown
    age = oldest_pending_age()
    shown = oldest_pending_shown(staff)

    # Then the other client's job is the one waiting longest, for 2 minutes
    assert 2 * 60 <= age < 3 * 60
    assert f"/admin/jobs/job/{late.pk}/change/" in shown
