"""A process's request turns go round the clients waiting for one (core/concurrency.py,
FairTurns): a client with many requests queued does not make another client's wait behind all of
them."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory

from core import concurrency
from core.concurrency import ActiveRequestsMiddleware


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _sender(middleware: ActiveRequestsMiddleware) -> Callable[[str], threading.Thread]:
    """Sends a request named `name` (`A1`: client A's first) through `middleware` on a thread."""

    def send(name: str) -> threading.Thread:
        request = RequestFactory().get(f"/api/jobs/?name={name}", HTTP_AUTHORIZATION=f"Bearer key-{name[0]}")
        thread = threading.Thread(target=middleware, args=(request,))
        thread.start()
        return thread

    return send


@pytest.fixture
def one_turn(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    settings.WEB_ACTIVE_REQUESTS = 1
    settings.WEB_TURN_CONNECTIONS = False  # no database: the views below use none
    monkeypatch.setattr(concurrency, "_turns", None)
    yield


def test_a_client_with_requests_queued_lets_another_clients_request_in_after_one_of_them(one_turn: None) -> None:
    # Given a process whose one turn is held by client A's request, each request holding it until
    # the test lets one end
    started: list[str] = []
    finish = threading.Semaphore(0)

    def view(request: HttpRequest) -> HttpResponse:
        started.append(request.GET["name"])
        finish.acquire()
        return HttpResponse()

    send = _sender(ActiveRequestsMiddleware(view))
    threads = [send("A1")]
    _until(lambda: started == ["A1"])

    # When A queues three more requests, and then client B one
    for number, name in enumerate(("A2", "A3", "A4"), start=1):
        threads.append(send(name))
        _until(lambda number=number: concurrency._turns.waiting() == number)
    threads.append(send("B1"))
    _until(lambda: concurrency._turns.waiting() == 4)

    # Then, as each request ends, B's runs after one more of A's, not after all three;
    # and A's own run in the order they came
    for count in range(2, 6):
        finish.release()
        _until(lambda count=count: len(started) == count)
    finish.release()
    for thread in threads:
        thread.join(timeout=10)
    assert started == ["A1", "A2", "B1", "A3", "A4"]


def test_a_request_that_gave_its_turn_back_while_waiting_takes_one_again_in_its_clients_place(one_turn: None) -> None:
    # Given a request of client A that gives its turn back to wait (as `Prefer: wait` does), while
    # client B's request holds the turn and A's second request queues
    order: list[str] = []
    waited, b_may_end, a2_may_end = threading.Event(), threading.Event(), threading.Event()

    def view(request: HttpRequest) -> HttpResponse:
        name = request.GET["name"]
        order.append(f"{name} runs")
        if name == "A1":
            with concurrency.turn_released():
                waited.wait(10)
            order.append("A1 back")
        elif name == "B1":
            b_may_end.wait(10)
        elif name == "A2":
            a2_may_end.wait(10)
        return HttpResponse()

    send = _sender(ActiveRequestsMiddleware(view))
    threads = [send("A1")]
    _until(lambda: order == ["A1 runs"])
    threads.append(send("B1"))
    _until(lambda: order == ["A1 runs", "B1 runs"])
    threads.append(send("A2"))
    _until(lambda: concurrency._turns.waiting() == 1)

    # When A1's wait ends (it queues for a turn again, behind A2, in A's place), and B1 ends
    waited.set()
    _until(lambda: concurrency._turns.waiting() == 2)
    b_may_end.set()
    _until(lambda: "A2 runs" in order)
    a2_may_end.set()
    for thread in threads:
        thread.join(timeout=10)

    # Then A's requests took their turns in the order they asked for them
    assert order == ["A1 runs", "B1 runs", "A2 runs", "A1 back"]
