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

from core import auth, concurrency
from core.concurrency import ActiveRequestsMiddleware
from core.models import ApiKey, Client


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _sender(middleware: ActiveRequestsMiddleware) -> Callable[..., threading.Thread]:
    """Sends a request named `name` (`A1`: client A's first) through `middleware` on a thread,
    with client A's key `key-A` unless another `key` is given, from `address`."""

    def send(name: str, *, key: str = "", address: str = "127.0.0.1") -> threading.Thread:
        request = RequestFactory().get(f"/api/jobs/?name={name}", HTTP_AUTHORIZATION=f"Bearer {key or 'key-' + name[0]}",
                                       REMOTE_ADDR=address)
        thread = threading.Thread(target=middleware, args=(request,))
        thread.start()
        return thread

    return send


def _key_known(monkeypatch: pytest.MonkeyPatch, key: str, client: Client) -> None:
    """As after the key authenticated in this process (core/auth.py remembers it)."""
    monkeypatch.setitem(auth._checked, auth.api_key_digest(key), (time.monotonic(), ApiKey(client=client)))


@pytest.fixture
def one_turn(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """One turn per process; clients A and B with the keys `key-A` and `key-B` (and A with
    `key-A2` and `key-A3` too), each seen valid by this process already."""
    settings.WEB_ACTIVE_REQUESTS = 1
    settings.WEB_TURN_CONNECTIONS = False  # no database: the views below use none
    monkeypatch.setattr(concurrency, "_turns", None)
    clients = {name: Client(name=name) for name in "AB"}
    for name, client in clients.items():
        _key_known(monkeypatch, f"key-{name}", client)
    for key in ("key-A2", "key-A3"):
        _key_known(monkeypatch, key, clients["A"])
    yield


def _turns_taken_in_order(send: Callable[..., threading.Thread], queued: list[tuple[str, dict[str, str]]],
                          started: list[str], finish: threading.Semaphore) -> list[str]:
    """With A1 holding the turn, queue `queued` (name, send's options) one after another, then
    let each request end in turn: the order they ran in."""
    threads = [send("A1")]
    _until(lambda: started == ["A1"])
    for number, (name, options) in enumerate(queued, start=1):
        threads.append(send(name, **options))
        _until(lambda number=number: concurrency._turns.waiting() == number)
    for count in range(2, len(queued) + 2):
        finish.release()
        _until(lambda count=count: len(started) == count)
    finish.release()
    for thread in threads:
        thread.join(timeout=10)
    return started


@pytest.fixture
def held_view() -> tuple[ActiveRequestsMiddleware, list[str], threading.Semaphore]:
    """A view that notes each request's name as it starts and holds its turn until released."""
    started: list[str] = []
    finish = threading.Semaphore(0)

    def view(request: HttpRequest) -> HttpResponse:
        started.append(request.GET["name"])
        finish.acquire()
        return HttpResponse()

    return ActiveRequestsMiddleware(view), started, finish


def test_a_client_with_requests_queued_lets_another_clients_request_in_after_one_of_them(
    one_turn: None, held_view: tuple[ActiveRequestsMiddleware, list[str], threading.Semaphore],
) -> None:
    # Given a process whose one turn is held by client A's request, when A queues three more
    # requests, and then client B one
    middleware, started, finish = held_view
    queued = [(name, {}) for name in ("A2", "A3", "A4", "B1")]

    # Then, as each request ends, B's runs after one more of A's, not after all three;
    # and A's own run in the order they came
    assert _turns_taken_in_order(_sender(middleware), queued, started, finish) == ["A1", "A2", "B1", "A3", "A4"]


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


def test_a_clients_requests_share_its_place_whichever_of_its_keys_they_send(
    one_turn: None, held_view: tuple[ActiveRequestsMiddleware, list[str], threading.Semaphore],
) -> None:
    # Given client A's request holding the turn, when A queues a request with each of its three
    # keys, and then client B one
    middleware, started, finish = held_view
    queued = [("A2", {}), ("A3", {"key": "key-A2"}), ("A4", {"key": "key-A3"}), ("B1", {})]

    # Then B's runs after one more of A's: A's keys do not give it a place each
    assert _turns_taken_in_order(_sender(middleware), queued, started, finish) == ["A1", "A2", "B1", "A3", "A4"]


def test_requests_with_made_up_keys_share_their_addresss_place(
    one_turn: None, held_view: tuple[ActiveRequestsMiddleware, list[str], threading.Semaphore],
) -> None:
    # Given client A's request holding the turn, when someone at another address queues three
    # requests, each with a key of its own making (one not valid, or not yet seen valid here), and
    # then client B one
    middleware, started, finish = held_view
    guesses = [(f"X{n}", {"key": f"jak_guess{n}", "address": "203.0.113.9"}) for n in (1, 2, 3)]

    # Then B's runs after one of theirs: made-up keys do not each take a place beside the clients'
    order = _turns_taken_in_order(_sender(middleware), [*guesses, ("B1", {})], started, finish)
    assert order == ["A1", "X1", "B1", "X2", "X3"]


def test_requests_without_a_key_from_one_ipv6_network_share_its_place(
    one_turn: None, held_view: tuple[ActiveRequestsMiddleware, list[str], threading.Semaphore],
) -> None:
    # Given client A's request holding the turn, when someone queues three requests with made-up
    # keys, each from another address of one IPv6 /64 (one machine commonly has a whole /64 to
    # pick from), and then client B one
    middleware, started, finish = held_view
    guesses = [(f"X{n}", {"key": f"jak_guess{n}", "address": f"2001:db8:1:2::{n}"}) for n in (1, 2, 3)]

    # Then B's runs after one of theirs, as for one address: the /64 is their place, as it is
    # their budget of failed key checks (core/throttling.py)
    order = _turns_taken_in_order(_sender(middleware), [*guesses, ("B1", {})], started, finish)
    assert order == ["A1", "X1", "B1", "X2", "X3"]
