"""/readyz (and the figures that ask the same: /metrics, the console) against a broker that hangs:
the answer names it, and the process's other requests are not held meanwhile; against a database
that stops answering: the check gives up within DB_CHECK_TIMEOUT_SECONDS. And however many
ask, a process checks its dependencies once per READYZ_CHECK_SECONDS, seen as the connections a
proxy in front of the broker is asked for."""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections

from core import health
from tests.conftest import Api, SilentServer, serving, silent_server
from tests.proxy import CountingProxy


def test_a_broker_that_never_answers_holds_no_other_request(make_api: Callable[..., Api], tmp_path: Any) -> None:
    # Given the API served with its one request turn per process (the default), and a broker
    # that takes connections and never answers (Redis stalled, a half-open network), waited for
    # 5 s rather than 2, so the list below surely comes while the check waits
    answers: dict[str, requests.Response] = {}
    with silent_server() as broker, serving(make_api(), tmp_path / "gunicorn.log",
                                            CELERY_BROKER_URL=f"redis://{broker.address}/0",
                                            CELERY_BROKER_CONNECTION_TIMEOUT="5") as (api, _):
        # When a readiness probe checks it, and a client lists its jobs meanwhile
        probe = threading.Thread(target=lambda: answers.update(readyz=api.get("/readyz", timeout=60)))
        probe.start()
        time.sleep(1)
        started = time.monotonic()
        listed = api.get("/api/jobs/")
        took = time.monotonic() - started
        probe.join()
        # (and afterwards requests on the process's many threads all answer)
        with ThreadPoolExecutor(8) as pool:
            statuses = set(pool.map(lambda _: api.get("/api/jobs/").status_code, range(40)))

    # Then the list answers at once, and the probe names the broker
    assert listed.status_code == 200 and took < 2, took
    assert answers["readyz"].status_code == 503
    assert answers["readyz"].json()["error"]["details"]["failed"] == ["broker"]
    assert statuses == {200}


@contextlib.contextmanager
def readyz_behind_proxy(make_api: Callable[..., Api], tmp_path: Any, check_seconds: float
                        ) -> Iterator[tuple[Api, CountingProxy]]:
    """The API served with READYZ_CHECK_SECONDS=`check_seconds`, its broker behind a CountingProxy."""
    broker = urlsplit(settings.CELERY_BROKER_URL)
    proxy = CountingProxy((broker.hostname or "127.0.0.1", broker.port or 6379))
    try:
        with serving(make_api(), tmp_path / "gunicorn.log", READYZ_CHECK_SECONDS=str(check_seconds),
                     CELERY_BROKER_URL=f"redis://{proxy.address}{broker.path}") as (api, _):
            yield api, proxy
    finally:
        proxy.close()


def test_readiness_is_checked_once_per_window_however_often_it_is_asked(
    make_api: Callable[..., Api], tmp_path: Any
) -> None:
    # Given the API checking readiness at most every 5 s
    with readyz_behind_proxy(make_api, tmp_path, 5) as (api, proxy):
        # When /readyz is asked once, then 20 times more
        before = proxy.connections
        first = api.get("/readyz")
        checked = proxy.connections
        again = [api.get("/readyz") for _ in range(20)]

    # Then every answer is the first one's, and only the first reached the broker
    assert first.status_code == 200 and first.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}
    assert {(r.status_code, r.text) for r in again} == {(200, first.text)}
    assert checked > before
    assert proxy.connections == checked, proxy.connections - checked


def test_a_failure_is_kept_for_the_window_too_then_checked_again(make_api: Callable[..., Api], tmp_path: Any) -> None:
    # Given the API checking readiness at most every second, and its broker down
    with readyz_behind_proxy(make_api, tmp_path, 1) as (api, proxy):
        proxy.down = True
        down = api.get("/readyz")
        checked_at, checked = time.monotonic(), proxy.connections
        # When the broker is back, and /readyz is asked at once, then after the window
        proxy.down = False
        at_once = api.get("/readyz")
        asked_within = time.monotonic() - checked_at
        reached_within = proxy.connections - checked
        time.sleep(1.2)
        after = api.get("/readyz")

    # Then within the window the failure is answered again, without asking the broker, and after
    # it the broker is checked again and found back
    assert down.status_code == 503 and down.json()["error"]["details"]["failed"] == ["broker"]
    assert asked_within < 1
    assert (at_once.status_code, at_once.text, reached_within) == (503, down.text, 0)
    assert after.status_code == 200, after.text
    assert proxy.connections > checked


def test_callers_during_a_slow_check_all_get_its_one_outcome(make_api: Callable[..., Api], tmp_path: Any) -> None:
    # Given the API (one request turn per process, the default) checking readiness at most
    # every 0.5 s, and a broker that takes a second to answer a new connection
    with readyz_behind_proxy(make_api, tmp_path, 0.5) as (api, proxy):
        api.get("/readyz")
        time.sleep(0.6)
        proxy.delay = 1
        before = proxy.connections
        # When 10 probes ask at once
        started = time.monotonic()
        with ThreadPoolExecutor(10) as pool:
            # (a requests.Session is not for threads: each probe its own connection)
            answers = list(pool.map(lambda _: requests.get(f"{api.base_url}/readyz", timeout=30), range(10)))
        took = time.monotonic() - started
        during = proxy.connections - before
        # (what one check asks of the broker, on its own)
        time.sleep(0.6)
        proxy.delay = 0
        before = proxy.connections
        api.get("/readyz")
        one_check = proxy.connections - before

    # Then all are answered ready, together, by one check
    assert {a.status_code for a in answers} == {200}
    assert during == one_check, (during, one_check)
    assert took < 2.5, took


def test_with_no_window_every_call_checks(make_api: Callable[..., Api], tmp_path: Any) -> None:
    # Given the API with READYZ_CHECK_SECONDS=0
    with readyz_behind_proxy(make_api, tmp_path, 0) as (api, proxy):
        # When /readyz is asked 5 times
        reached = []
        for _ in range(5):
            before = proxy.connections
            assert api.get("/readyz").status_code == 200
            reached.append(proxy.connections - before)

    # Then each one reached the broker
    assert min(reached) >= 1, reached


def test_a_database_that_stops_answering_is_unreachable_within_the_bound(
    transactional_db: Any, settings: Any
) -> None:
    # Given a process checking at every request, whose database connection goes through a proxy,
    # and the database found ready through it
    settings.READYZ_CHECK_SECONDS = 0
    settings.DB_CHECK_TIMEOUT_SECONDS = 0.5
    database = connection.settings_dict
    proxy = CountingProxy((database["HOST"] or "127.0.0.1", int(database["PORT"] or 5432)))
    outcomes: list[Any] = []

    def probe() -> None:  # in a thread of its own: its `default` connection is its own
        through_proxy = connections.create_connection(DEFAULT_DB_ALIAS)
        host, port = proxy.address.split(":")
        through_proxy.settings_dict = {**through_proxy.settings_dict, "HOST": host, "PORT": port}
        connections[DEFAULT_DB_ALIAS] = through_proxy
        try:
            outcomes.append(health.unreachable())
            # When the database stops answering on that open connection (no statement timeout
            # helps here: the server never sees the query)
            proxy.stalled = True
            started = time.monotonic()
            outcomes.append(health.unreachable())
            outcomes.append(time.monotonic() - started)
        finally:
            through_proxy.close()

    thread = threading.Thread(target=probe)
    try:
        thread.start()
        thread.join(timeout=10)
        hung = thread.is_alive()
    finally:
        proxy.close()  # frees a check that hangs
        thread.join()

    # Then the check answers within its bound, naming the database
    assert not hung, "the database check waited on the stalled connection"
    ready, failed, took = outcomes
    assert (ready, failed) == ([], ["database"])
    assert took < 2, took


def test_a_request_waits_for_another_requests_check_as_long_as_its_bounds_allow(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given checks bounded to 0.3 s in all (the database's connect and query timeouts, none for
    # the broker), and a database check that overruns them (2 s)
    settings.READYZ_CHECK_SECONDS = 0.001
    settings.DB_CHECK_TIMEOUT_SECONDS = 0.2
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}
    monkeypatch.setitem(settings.DATABASES["default"]["OPTIONS"], "connect_timeout", 0.1)

    def overrunning() -> bool:
        time.sleep(2)
        return True

    monkeypatch.setitem(health.CHECKS, "database", overrunning)
    checker = threading.Thread(target=health.unreachable)
    checker.start()
    time.sleep(0.1)

    # When another request asks meanwhile
    started = time.monotonic()
    failed = health.unreachable()
    waited = time.monotonic() - started
    checker.join()

    # Then it answers once the bounds have passed, naming the dependency the check still waits on
    assert failed == ["database"]
    assert waited < 1, waited


def test_served_readyz_answers_within_the_bound_when_the_database_stops_answering(
    make_api: Callable[..., Api], tmp_path: Any
) -> None:
    # Given the API served with its database behind a proxy, found ready, then left idle long
    # enough that its kept connection is checked before its next use
    database = connection.settings_dict
    proxy = CountingProxy((database["HOST"] or "127.0.0.1", int(database["PORT"] or 5432)))
    url = (f"postgres://{database['USER']}:{database['PASSWORD']}@{proxy.address}/{database['NAME']}"
           "?connect_timeout=2")
    try:
        with serving(make_api(), tmp_path / "gunicorn.log", DATABASE_URL=url, READYZ_CHECK_SECONDS="0",
                     DB_CHECK_TIMEOUT_SECONDS="0.5") as (api, _):
            assert api.get("/readyz").status_code == 200
            time.sleep(1.2)
            # When the database stops answering, and a probe asks
            proxy.stalled = True
            started = time.monotonic()
            try:
                answer: requests.Response | None = api.get("/readyz", timeout=8)
            except requests.Timeout:
                answer = None
            took = time.monotonic() - started
            proxy.close()  # frees what still waits on it before gunicorn stops
    finally:
        proxy.close()

    # Then it is answered 503, naming the database, within the bounds: the kept connection's check
    # (0.5 s), then a new connection's connect timeout (2 s)
    assert answer is not None, "/readyz waited on the stalled database"
    assert answer.status_code == 503 and answer.json()["error"]["details"]["failed"] == ["database"]
    assert took < 4, took


def test_the_broker_check_against_a_hung_broker_tries_once_as_its_bound_counts(
    broker_hung_briefly: SilentServer,
) -> None:
    # Given the broker's connection timeout set under 2 s (0.5 s: its connect and socket
    # timeouts, 1 s in the bound), and a broker that takes connections and never answers

    # When the check asks it
    answers = health._broker_answers()

    # Then the broker is unreachable after one connection, which waited out its socket timeout:
    # not a second one 2 s later (3 s in all)
    assert answers is False
    assert len(broker_hung_briefly.connections) == 1
