"""A list's query with a bad filter and a bad `page_size` or `cursor` (core/filters.py
`query_filtered`, core/pagination.py) is one 400 naming every one of them, where it named one
side and, once the client mended it, the other in a second 400; each alone answers as before."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import Client as DjangoClient
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.services import api_key_create, client_create
from jobs.models import Job, JobResult
from tests.conftest import Api
from tests.jobs.test_api_errors import assert_error
from webhooks.models import Delivery, Endpoint

PAGE_SIZE = "Expected a whole number of at least 1."
CURSOR = "it is not a cursor of this service"
CURSOR_MESSAGE = (
    f"Invalid cursor: {CURSOR}. Take cursors from `next` or `previous` as they are, or start again without one."
)
# Each list and a bad filter of its own: an invalid value where it has filters, else a parameter
# it does not take.
BAD_FILTERS = [
    ("/api/jobs/", ("status", "NEVER")),
    ("/api/results/", ("stauts", "x")),
    ("/api/deliveries/", ("created_after", "not a time")),
    ("/api/jobs/{job}/deliveries/", ("stauts", "x")),
    ("/api/webhook-endpoints/", ("stauts", "x")),
]
# Each list and its most rows a page, which its page size's 400 names.
MOST = [("/api/jobs/", 500), ("/api/results/", 500), ("/api/deliveries/", 100), ("/api/jobs/{job}/deliveries/", 100),
        ("/api/webhook-endpoints/", 100)]


def _path(api: Api, path: str) -> str:
    if "{job}" not in path:
        return path
    job = Job.objects.create(owner=api.client, job_name="api.tasks.hello_world", status=Job.Status.SUCCESS,
                             dispatched_at=timezone.now())
    return path.format(job=job.pk)


@pytest.mark.parametrize(("path", "bad_filter"), BAD_FILTERS)
def test_a_bad_filter_with_a_bad_page_size_or_cursor_is_one_400_naming_each(
    make_api: Callable[..., Api], path: str, bad_filter: tuple[str, str]
) -> None:
    api = make_api()
    path = _path(api, path)
    name, value = bad_filter

    # When the client's query holds a bad filter and a bad page size, a bad cursor, or both
    answers = {
        ("page_size",): api.get(path, params={name: value, "page_size": "0"}),
        ("cursor",): api.get(path, params={name: value, "cursor": "garbage"}),
        ("page_size", "cursor"): api.get(path, params={name: value, "page_size": "x", "cursor": "garbage"}),
    }

    # Then each is one `invalid_filter` naming the filter and each of the page's parameters with
    # what its own 400 says of it
    for paging, answer in answers.items():
        error = assert_error(answer, 400, "invalid_filter")
        assert list(error["details"]) == [name, *paging], (path, paging)
        assert error["message"] == "Invalid filter; see details."
        assert error["details"].get("page_size", [PAGE_SIZE]) == [PAGE_SIZE]
        assert error["details"].get("cursor", [CURSOR]) == [CURSOR]


@pytest.mark.parametrize(("path", "most"), MOST)
def test_a_bad_page_size_with_a_bad_cursor_is_one_400_naming_both(
    make_api: Callable[..., Api], path: str, most: int
) -> None:
    api = make_api()

    # When the query holds a page size that is no number and a cursor the list did not issue
    answer = api.get(_path(api, path), params={"page_size": "x", "cursor": "garbage"})

    # Then the one 400 is `invalid_parameter` naming both, each with its own 400's words
    assert answer.json()["error"] == {
        "code": "invalid_parameter",
        "message": f"page_size must be a whole number from 1 (at most {most} are returned). {CURSOR_MESSAGE}",
        "details": {"page_size": [PAGE_SIZE], "cursor": [CURSOR]},
    }
    assert answer.status_code == 400


@pytest.mark.parametrize(("path", "bad_filter", "most"), [(*bad, most) for bad, (_, most) in zip(BAD_FILTERS, MOST)])
def test_each_alone_answers_as_it_did(
    make_api: Callable[..., Api], path: str, bad_filter: tuple[str, str], most: int
) -> None:
    api = make_api()
    path = _path(api, path)
    name, value = bad_filter

    # When the query holds one mistake
    page_size = api.get(path, params={"page_size": "0"})
    cursor = api.get(path, params={"cursor": "garbage"})
    bad = api.get(path, params={name: value})

    # Then its answer is the one it was before any two were named at once
    assert page_size.status_code == cursor.status_code == bad.status_code == 400
    assert page_size.json()["error"] == {
        "code": "invalid_parameter",
        "message": f"page_size must be a whole number from 1 (at most {most} are returned).",
        "details": {"page_size": [PAGE_SIZE]},
    }
    assert cursor.json()["error"] == {
        "code": "invalid_cursor", "message": CURSOR_MESSAGE, "details": {"cursor": [CURSOR]}
    }
    assert bad.json()["error"]["code"] == "invalid_filter"
    assert list(bad.json()["error"]["details"]) == [name]


def test_a_page_parameter_given_twice_is_named_once_with_the_other(make_api: Callable[..., Api]) -> None:
    # When the page size is given twice (the last one bad) beside a bad cursor
    error = assert_error(make_api().get("/api/jobs/?page_size=5&page_size=0&cursor=garbage"), 400, "invalid_filter")

    # Then the page size is named for its repetition, and the cursor for itself
    assert error["details"] == {
        "page_size": ["Given more than once; the list reads one value of it."], "cursor": [CURSOR]
    }


@pytest.fixture
def http(db: Any) -> DjangoClient:
    return DjangoClient(HTTP_AUTHORIZATION=f"Bearer {api_key_create(client=client_create(name='list-query-errors'))}")


@pytest.mark.parametrize(
    ("path", "table"),
    [("/api/jobs/", Job), ("/api/results/", JobResult), ("/api/deliveries/", Delivery),
     ("/api/webhook-endpoints/", Endpoint)],
)
def test_a_query_of_every_mistake_reads_no_row_of_the_list(http: DjangoClient, path: str, table: Any) -> None:
    # When a query holds every kind of mistake, or the page's two
    for query in ("stauts=x&page_size=0&cursor=garbage", "page_size=x&cursor=garbage"):
        with CaptureQueriesContext(connection) as queries:
            answer = http.get(f"{path}?{query}")

        # Then it is refused before the list's table is read: a bad request costs no read of it
        assert answer.status_code == 400, answer.content
        read = [each["sql"] for each in queries.captured_queries if table._meta.db_table in each["sql"]]
        assert read == [], (path, query)
