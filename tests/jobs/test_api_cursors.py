"""Cursor pages: every item exactly once, forward and back, and a cursor the list did not issue
(garbled, altered, or made for another ordering) answers 400 `invalid_cursor`, never 500."""
from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from django.utils import timezone

from jobs.models import Job, JobResult
from tests.conftest import Api
from tests.jobs.test_api_errors import assert_error

ORDERING = "-created_at,-pk"


def cursor(**tokens: str) -> str:
    return base64.b64encode(urlencode(tokens).encode()).decode()


def relative(api: Api, url: str) -> str:
    return url.replace(api.base_url, "")


def _jobs(api: Api, minutes: list[int]) -> list[Job]:
    """Jobs created `minutes` ago each (equal minutes: equal timestamps), newest first."""
    now = timezone.now()
    jobs = Job.objects.bulk_create(
        Job(owner=api.client, job_name="api.tasks.hello_world", created_at=now - timedelta(minutes=m),
            dispatched_at=now)
        for m in minutes
    )
    return sorted(jobs, key=lambda job: (job.created_at, job.pk), reverse=True)


def walk(api: Api, url: str, direction: str) -> tuple[list[list[str]], dict[str, Any]]:
    pages, page = [], api.get(url).json()
    pages.append([job["id"] for job in page["results"]])
    while page[direction]:
        response = api.get(relative(api, page[direction]))
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append([job["id"] for job in page["results"]])
    return pages, page


@pytest.mark.parametrize("minutes", [[0, 1, 2, 3, 4, 5, 6], [0, 1, 1, 1, 1, 2, 3, 3]])
def test_pages_hold_every_job_once_forward_and_back(
    make_api: Callable[..., Api], minutes: list[int]
) -> None:
    # The second case has runs of equal timestamps longer than a page: offset cursors.
    api = make_api()
    expected = [str(job.id) for job in _jobs(api, minutes)]

    forward, last = walk(api, "/api/jobs/?page_size=3", "next")
    backward, first = walk(api, relative(api, last["previous"]), "previous")

    assert [job for page in forward for job in page] == expected
    assert [job for page in reversed(backward) for job in page] + forward[-1] == expected
    assert first["previous"] is None


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("not base64!", "not a cursor"),
        ("cD0yMDI2LTA", "not a cursor"),  # a cursor cut short
        (base64.b64encode(b"\xff\xfe").decode(), "not a cursor"),
        (cursor(p="2026-01-01 00:00:00+00:00"), "another list or ordering"),  # DRF's own cursor
        (cursor(s="-pk", p="42"), "another list or ordering"),
        (cursor(s="created_at,pk", p="2026-01-01 00:00:00+00:00"), "another list or ordering"),
        (cursor(s=ORDERING, p="garbage"), "not a date and time"),
        (cursor(s=ORDERING, p="42"), "not a date and time"),
        (cursor(s=ORDERING, p="2026-01-01 00:00:00"), "no UTC offset"),
        (cursor(s=ORDERING, p="0001-01-01 00:00:00+10:00"), "out of range"),
        (cursor(s=ORDERING, p="9999-12-31 23:59:59-10:00"), "out of range"),
        (cursor(s=ORDERING, p="2026-01-01 00:00:00+00:00", o="-1"), "malformed"),
        (cursor(s=ORDERING, o="1e3"), "malformed"),
        (cursor(s=ORDERING, o="9" * 5000), "malformed"),
        (cursor(s=ORDERING, r="2"), "malformed"),
        (cursor(s=ORDERING, x="1"), "not a cursor"),
        (base64.b64encode(f"s={ORDERING}&s={ORDERING}".encode()).decode(), "not a cursor"),
    ],
)
def test_a_cursor_the_list_did_not_issue_is_a_400(
    make_api: Callable[..., Api], value: str, why: str
) -> None:
    api = make_api()
    _jobs(api, [0, 1])
    job_id = Job.objects.filter(owner=api.client).values_list("pk", flat=True)[0]

    for path in ("/api/jobs/", "/api/results/", f"/api/jobs/{job_id}/deliveries/"):
        error = assert_error(api.get(path, params={"cursor": value}), 400, "invalid_cursor")
        assert why in error["message"]


def test_a_cursor_of_one_list_works_on_another_with_the_same_ordering(
    make_api: Callable[..., Api],
) -> None:
    # Both lists are newest first: a position is a time, meaningful on either.
    api = make_api()
    jobs = _jobs(api, [0, 1, 2])
    JobResult.objects.create(owner=api.client, task_name="t", result=1, created_at=jobs[2].created_at)

    next_url = api.get("/api/jobs/?page_size=1").json()["next"]
    response = api.get("/api/results/?" + next_url.split("?", 1)[1])

    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == 1


@pytest.mark.parametrize("value", ["abc", "0", "-1", "1.5", "٣", " 5", "9" * 5000])
def test_a_page_size_that_is_not_a_whole_number_from_1_is_a_400(
    make_api: Callable[..., Api], value: str
) -> None:
    api = make_api()

    for path in ("/api/jobs/", "/api/results/"):
        error = assert_error(api.get(path, params={"page_size": value}), 400, "invalid_parameter")
        assert "page_size" in error["details"]


def test_an_empty_cursor_or_page_size_means_none(make_api: Callable[..., Api]) -> None:
    api = make_api()
    _jobs(api, [0, 1])

    response = api.get("/api/jobs/?cursor=&page_size=")

    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == 2
