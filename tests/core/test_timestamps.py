"""Every date-time the API reads (a submission's `run_at` and `deadline`, a recovery's `since`, the
lists' `created_after` and `created_before`) is read one way (core.timestamps): an offset no clock
shows is a 400 in the usual shape, not another offset (Python and Django read +01:60 as +02:00,
so a client got a time it did not mean, silently)."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from jobs.models import Job
from tests.conftest import Api
from tests.jobs.test_api_errors import assert_error

HELLO = "api.tasks.hello_world"
# Offsets Python and Django read as another one (the first two as +02:00 and -01:00), or with a
# fraction of a second no zone has.
MISREAD_OFFSETS = ["+01:60", "-00:60", "+0160", "+00:00:60", "+01:00:30.5"]


@pytest.fixture
def client_api(make_api: Callable[..., Api]) -> Api:
    return make_api()


def hours_ahead(hours: int) -> str:
    """A wall-clock time `hours` ahead of now in UTC, without its offset."""
    return f"{timezone.now() + timedelta(hours=hours):%Y-%m-%dT%H:%M:%S}"


def refused_as(response: Any, code: str, field: str) -> list[str]:
    return assert_error(response, 400, code)["details"][field]


@pytest.mark.parametrize("offset", MISREAD_OFFSETS)
@pytest.mark.parametrize("field", ["run_at", "deadline"])
def test_a_submitted_time_with_an_offset_no_clock_shows_is_a_400(client_api: Api, field: str, offset: str) -> None:
    # Given a time 5 hours ahead (still ahead whichever offset it was taken for), and the
    # answer to a time that is not one
    not_a_time = refused_as(client_api.post("/api/jobs/", json={"job_name": HELLO, field: "tomorrow"}),
                            "invalid", field)

    # When it is sent with an offset no clock shows, alone or in a batch
    one = client_api.post("/api/jobs/", json={"job_name": HELLO, field: hours_ahead(5) + offset})
    batch = client_api.post("/api/jobs/batch/", json={"jobs": [{"job_name": HELLO, field: hours_ahead(5) + offset}]})

    # Then each is refused as that time is, and no job is made
    assert refused_as(one, "invalid", field) == not_a_time
    assert str(not_a_time) in str(assert_error(batch, 400, "invalid_batch")["details"])
    assert Job.objects.count() == 0


@pytest.mark.parametrize("offset", MISREAD_OFFSETS)
@pytest.mark.parametrize("path", ["/api/jobs/", "/api/deliveries/"])
@pytest.mark.parametrize("parameter", ["created_after", "created_before"])
def test_a_list_filter_with_an_offset_no_clock_shows_is_a_400(
    client_api: Api, path: str, parameter: str, offset: str
) -> None:
    not_a_time = refused_as(client_api.get(path, params={parameter: "yesterday"}), "invalid_filter", parameter)

    response = client_api.get(path, params={parameter: f"2026-01-01T00:00:00{offset}"})

    assert refused_as(response, "invalid_filter", parameter) == not_a_time


@pytest.mark.parametrize("offset", MISREAD_OFFSETS)
def test_a_recovery_since_a_time_with_an_offset_no_clock_shows_is_a_400(client_api: Api, offset: str) -> None:
    created = client_api.post("/api/webhook-endpoints/", json={"url": "http://127.0.0.1:9/hook", "enabled": False})
    assert created.status_code == 201, created.text
    recover = f"/api/webhook-endpoints/{created.json()['id']}/recover/"
    not_a_time = refused_as(client_api.post(recover, json={"since": "yesterday"}), "invalid", "since")

    response = client_api.post(recover, json={"since": f"2026-01-01T00:00:00{offset}"})

    assert refused_as(response, "invalid", "since") == not_a_time


def test_the_date_time_forms_the_api_documents_are_read_as_meant(client_api: Api) -> None:
    # Given one moment 5 hours ahead, written as RFC 3339 allows (a lowercase "t" and "z", a
    # space for the "T", any offset up to +-23:59), as Python writes a zone's historical
    # offset (in seconds), and with no offset at all (UTC)
    moment = (timezone.now() + timedelta(hours=5)).replace(microsecond=0)
    utc = f"{moment:%Y-%m-%dT%H:%M:%S}"
    forms = {
        "lowercase": f"{moment:%Y-%m-%dt%H:%M:%S}z",
        "space": f"{moment:%Y-%m-%d %H:%M:%S}Z",
        "+05:30": f"{moment + timedelta(hours=5, minutes=30):%Y-%m-%dT%H:%M:%S}+05:30",
        "-23:59": f"{moment - timedelta(hours=23, minutes=59):%Y-%m-%dT%H:%M:%S}-23:59",
        "+00:19:32": f"{moment + timedelta(minutes=19, seconds=32):%Y-%m-%dT%H:%M:%S}+00:19:32",
        "no offset": utc,
    }

    # When a job is scheduled at each
    scheduled = {name: client_api.post("/api/jobs/", json={"job_name": HELLO, "run_at": value})
                 for name, value in forms.items()}

    # Then each is that moment
    for name, response in scheduled.items():
        assert response.status_code == 202, (name, response.text)
        assert datetime.fromisoformat(response.json()["scheduled_for"]) == moment, name
    # ...and a list filter reads a date alone as its midnight UTC
    today = f"{timezone.now():%Y-%m-%d}"
    assert len(client_api.get("/api/jobs/", params={"created_after": today}).json()["results"]) == len(forms)
    assert client_api.get("/api/jobs/", params={"created_before": today}).json()["results"] == []


def test_a_leap_second_is_a_400(client_api: Api) -> None:
    # RFC 3339 allows 23:59:60; neither Python's datetime nor PostgreSQL's timestamptz holds it
    response = client_api.post("/api/jobs/", json={"job_name": HELLO, "run_at": "2030-06-30T23:59:60Z"})

    assert "run_at" in assert_error(response, 400, "invalid")["details"]
