"""Request turns and their database connections (core/concurrency.py), in process: what one
request leaves on its turn's connection never reaches the next request."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory

from core import concurrency
from core.concurrency import ActiveRequestsMiddleware

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def turns(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[Callable[[HttpRequest], HttpResponse]], HttpResponse]]:
    """Serve a view as production does: one turn a process, its connection going with it and
    kept between requests."""
    settings.WEB_ACTIVE_REQUESTS = 1
    settings.WEB_TURN_CONNECTIONS = True
    monkeypatch.setitem(connections.settings[DEFAULT_DB_ALIAS], "CONN_MAX_AGE", 600)

    def serve(view: Callable[[HttpRequest], HttpResponse]) -> HttpResponse:
        return ActiveRequestsMiddleware(view)(RequestFactory().get("/api/jobs/"))

    yield serve
    for wrapper in concurrency._idle_turn_connections:
        wrapper.close()
    concurrency._idle_turn_connections.clear()
    concurrency._turns = None


def _backend_pid(request: HttpRequest) -> HttpResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return HttpResponse(str(cursor.fetchone()[0]))


def test_the_next_request_reuses_the_turns_connection(turns: Callable[..., HttpResponse]) -> None:
    first = turns(_backend_pid).content

    assert turns(_backend_pid).content == first


def test_a_request_that_ends_inside_a_transaction_does_not_break_the_next(
    turns: Callable[..., HttpResponse],
) -> None:
    # Given: a view (a bug) that returns with its transaction still open
    def leaves_a_transaction_open(request: HttpRequest) -> HttpResponse:
        transaction.atomic().__enter__()
        return _backend_pid(request)

    abandoned = turns(leaves_a_transaction_open).content

    # When: the next request runs on the process's one turn
    answer = turns(_backend_pid)

    # Then: it gets a working connection, not the abandoned transaction's
    assert answer.status_code == 200
    assert answer.content != abandoned
