"""The console's "errors of the last hour" with failed jobs whose `error` is not the shape the
code writes (a row written by hand in SQL, or by an older version): the page shows them rather
than answering 500 to every operator until those jobs are an hour old."""
from __future__ import annotations

import html
from datetime import timedelta
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
    odd_type = "5" if isinstance(error, dict) else "unknown"
    assert row_of(errors, odd_type)[1] == "1"


def test_errors_are_grouped_by_the_type_and_shown_with_the_message_the_api_shows(staff: BrowserClient) -> None:
    # Given jobs failed in the last minutes whose errors' types are an object, a number and its
    # text, and missing in ways the API shows as "unknown" (a bare string, an object without a
    # type, a type of null or "", the type "unknown" itself); and a failed job with no error
    now = timezone.now()
    client = client_create(name="acme")
    stored_errors = [
        {"type": {"code": 7, "at": "db"}, "message": "deep"},
        {"type": 5, "message": "five"},
        {"type": "5", "message": "five again"},
        "boom",
        {"message": "untyped"},
        {"type": None, "message": "null type"},
        {"type": "", "message": "empty type"},
        {"type": "unknown", "message": ["the", "latest"]},
        None,
    ]
    for minutes_ago, stored in enumerate(reversed(stored_errors)):
        at = now - timedelta(minutes=minutes_ago)
        Job.objects.create(owner=client, job_name="api.tasks.hello_world", status=Job.Status.FAILURE,
                           error=stored, finished_at=at, created_at=at)

    # When an operator opens the console
    errors = html.unescape(section(staff.get("/console/").content.decode(), "failures"))

    # Then each row is a type as the job's own GET shows it, with the latest such job's message
    # as it shows it: the object type's last message was empty, and the types "unknown", "5" and
    # "(none)" were split over several rows
    assert row_of(errors, '{"at": "db", "code": 7}')[1:3] == ["1", "deep"]
    assert row_of(errors, "5")[1:3] == ["2", "five again"]
    assert row_of(errors, "unknown")[1:3] == ["5", '["the", "latest"]']
    assert row_of(errors, "(none)")[1:3] == ["1", "(no message)"]
