"""Jobs deleted in the admin ("Delete selected jobs", up to ADMIN_ACTION_MAX_ROWS of them): the
confirmation and the deletion read the jobs' ids and what the page shows of them, not their
payloads, results or events' bodies. Django's read every column of every selected job, and
of each of their events, twice (once to confirm, once to delete): with payloads of up to a
megabyte (API_MAX_BODY_BYTES) and results as large, 500 jobs were gigabytes in an API process."""
from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client as DjangoClient
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from core.services import client_create
from jobs.models import Job, JobEvent

pytestmark = pytest.mark.django_db

HELLO = "api.tasks.hello_world"
LARGE = ('"jobs_job"."payload"', '"jobs_job"."result"', '"jobs_jobevent"."body"')


def _columns_read(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"][:160] for q in queries.captured_queries
            if q["sql"].startswith("SELECT") and any(column in q["sql"].split(" FROM ")[0] for column in LARGE)]


def test_deleting_selected_jobs_reads_none_of_their_payloads_results_or_events(admin_client: DjangoClient) -> None:
    # Given finished jobs with large payloads and results, and their events
    owner = client_create(name="large-jobs")
    jobs = Job.objects.bulk_create([Job(owner=owner, job_name=HELLO, status=Job.Status.SUCCESS,
                                        payload={"text": "x" * 100_000}, result={"text": "y" * 100_000})
                                    for _ in range(3)])
    JobEvent.objects.bulk_create([JobEvent(job=job, owner=owner, job_name=HELLO, event_type="job.succeeded",
                                           body="z" * 100_000) for job in jobs])
    selected = {"action": "delete_selected", "_selected_action": [str(job.pk) for job in jobs]}

    # When an operator selects them, deletes them, and confirms
    with CaptureQueriesContext(connection) as confirming:
        page = admin_client.post(reverse("admin:jobs_job_changelist"), selected).content.decode()
    with CaptureQueriesContext(connection) as deleting:
        response = admin_client.post(reverse("admin:jobs_job_changelist"), {**selected, "post": "yes"})

    # Then the page named the jobs and counted their events, and neither request read a payload,
    # a result or an event's body
    assert all(str(job.pk) in page for job in jobs)
    assert "Job events: 3" in page
    assert _columns_read(confirming) == []
    assert _columns_read(deleting) == []
    # And the jobs went, with their events
    assert response.status_code == 302
    assert not Job.objects.filter(owner=owner).exists()
    assert not JobEvent.objects.filter(owner=owner).exists()
