"""The console's "errors of the last hour" with failed jobs whose `error` is not the shape the
code writes (a row written by hand in SQL, or by an older version): the page shows them rather
than answering 500 to every operator until those jobs are an hour old."""
from __future__ import annotations

from typing import Any

import pytest
from django.test import Client as BrowserClient
from django.utils import timezone

from core.services import client_create
from jobs.models import Job
from tests.console.test_console_page import row_of, section

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("error", ["boom", ["a", "b"], {"type": 5, "message": "five"}])
def test_a_failed_job_with_an_error_of_another_shape_is_listed(staff: BrowserClient, error: Any) -> None:
    # Given a job failed a minute ago with an error in the documented shape, and one without
    now = timezone.now()
    client = client_create(name="acme")
    for stored in ({"type": "ValueError", "message": "bad"}, error):
        Job.objects.create(owner=client, job_name="api.tasks.hello_world", status=Job.Status.FAILURE,
                           error=stored, finished_at=now, created_at=now)

    # When an operator opens the console
    response = staff.get("/console/")

    # Then it shows both among the last hour's errors
    assert response.status_code == 200
    errors = section(response.content.decode(), "failures")
    assert row_of(errors, "ValueError")[1] == "1"
    odd_type = "5" if isinstance(error, dict) else "(none)"
    assert row_of(errors, odd_type)[1] == "1"
