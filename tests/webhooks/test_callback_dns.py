"""Callback host names at submission and on endpoints: each resolved once per request, all within
CALLBACK_RESOLVE_SECONDS, and a slow name server never holds the process's turn (the live server
runs in this process with one turn, as a gunicorn process does)."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from core import http
from tests.conftest import Api
from tests.webhooks.conftest import HELLO
from webhooks import addresses

BUDGET = 2.0
# What a refused request may take beyond the budget: the rest of the request, on a busy machine.
MARGIN = 3.0


class SlowNameServer:
    """The resolver submissions use: every name resolves to loopback (allowed in the tests), names
    under .slow.example after `delay` seconds (cut short when the test ends)."""

    def __init__(self) -> None:
        self.delay = 20.0
        self.asked: list[str] = []
        self.first_asked = threading.Event()
        self.ended = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, host: str, port: int) -> Sequence[str]:
        with self._lock:
            self.asked.append(host)
        self.first_asked.set()
        if host.endswith(".slow.example"):
            self.ended.wait(self.delay)
        return ["127.0.0.1"]


@pytest.fixture
def name_server(monkeypatch: pytest.MonkeyPatch, settings: Any) -> Iterator[SlowNameServer]:
    settings.CALLBACK_RESOLVE_SECONDS = BUDGET
    server = SlowNameServer()
    monkeypatch.setattr(http, "DEFAULT_RESOLVER", server)
    yield server
    server.ended.set()  # frees the resolver pool's threads still waiting on it


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    return call(), time.monotonic() - started


def test_a_batch_naming_one_host_many_times_resolves_it_once(
    make_api: Callable[..., Api], name_server: SlowNameServer
) -> None:
    # Given: a name server that takes a while for each name
    name_server.delay = 0.2
    api = make_api()
    # Scheduled an hour ahead: the session's worker, if it runs, leaves them alone (a hundred jobs
    # running into the test's end would meet its flush).
    later = {"job_name": HELLO, "payload": {}, "run_at": (timezone.now() + timedelta(hours=1)).isoformat()}
    jobs = [{**later, "callback_url": f"https://hooks.slow.example/{i}"} for i in range(90)]
    jobs += [{**later, "callback_url": f"http://hooks.slow.example:8080/{i}"} for i in range(5)]
    jobs += [{**later, "callback_url": f"https://other.slow.example/{i}"} for i in range(5)]

    # When
    response = api.post("/api/jobs/batch/", json={"jobs": jobs})

    # Then: accepted, each host name looked up once
    assert response.status_code == 202, response.text
    assert len(response.json()["jobs"]) == 100
    assert sorted(name_server.asked) == ["hooks.slow.example", "other.slow.example"]


def test_a_name_not_resolved_within_the_budget_is_refused_without_holding_the_process(
    make_api: Callable[..., Api], name_server: SlowNameServer
) -> None:
    api, other = make_api(), make_api()
    answer: dict[str, Any] = {}

    def submit() -> None:
        answer["response"], answer["seconds"] = timed(lambda: api.post(
            "/api/jobs/", json={"job_name": HELLO, "payload": {}, "callback_url": "https://hangs.slow.example/hook"}
        ))

    # Given: a submission waiting on a name server that does not answer in time
    submitting = threading.Thread(target=submit)
    submitting.start()
    assert name_server.first_asked.wait(10)

    # When: another client asks the same process for something meanwhile
    listed = other.get("/api/jobs/")
    submission_still_waiting = submitting.is_alive()
    submitting.join(BUDGET + MARGIN + 30)

    # Then: the other client was answered during the lookup, not after it
    assert listed.status_code == 200, listed.text
    assert submission_still_waiting
    # And the submission was refused once the budget was spent, saying why, in the usual shape
    response = answer["response"]
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_callback_url"
    assert error["details"]["callback_url"] == [f"The host hangs.slow.example did not resolve within {BUDGET:g} s."]
    assert answer["seconds"] < BUDGET + MARGIN


def test_a_batchs_names_share_one_budget(make_api: Callable[..., Api], name_server: SlowNameServer) -> None:
    # Given: a batch of twenty jobs, each naming its own slow host
    api = make_api()
    jobs = [{"job_name": HELLO, "payload": {}, "callback_url": f"https://n{i}.slow.example/"} for i in range(20)]

    # When
    response, seconds = timed(lambda: api.post("/api/jobs/batch/", json={"jobs": jobs}))

    # Then: refused within one budget (not twenty), each slow name's job saying why
    assert response.status_code == 400, response.text
    assert seconds < BUDGET + MARGIN
    errors = response.json()["error"]["details"]["jobs"]
    assert [error["index"] for error in errors] == list(range(20))
    assert {error["code"] for error in errors} == {"invalid_callback_url"}
    assert errors[7]["details"]["callback_url"] == [f"The host n7.slow.example did not resolve within {BUDGET:g} s."]


def test_an_endpoint_url_not_resolved_within_the_budget_is_refused(
    make_api: Callable[..., Api], name_server: SlowNameServer
) -> None:
    api = make_api()

    # When: an endpoint is created on a slow name, and one is changed to it
    created, create_seconds = timed(lambda: api.post("/api/webhook-endpoints/", json={"url": "https://a.slow.example/"}))
    endpoint = api.post("/api/webhook-endpoints/", json={"url": "http://127.0.0.1:9/hooks"})
    assert endpoint.status_code == 201, endpoint.text
    changed, change_seconds = timed(lambda: api.request(
        "PATCH", f"/api/webhook-endpoints/{endpoint.json()['id']}/", json={"url": "https://b.slow.example/"}
    ))

    # Then: both refused once the budget was spent, on the url field
    for response, seconds, host in ((created, create_seconds, "a"), (changed, change_seconds, "b")):
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_url"
        assert error["details"]["url"] == [f"The host {host}.slow.example did not resolve within {BUDGET:g} s."]
        assert seconds < BUDGET + MARGIN


def test_a_client_whose_name_server_hangs_never_gets_another_clients_names_refused(
    make_api: Callable[..., Api], name_server: SlowNameServer
) -> None:
    # Given: a client whose batch named twenty hosts its name server does not answer for:
    # refused, the lookups it started still waiting on the name server
    hostile, other = make_api(), make_api()
    jobs = [{"job_name": HELLO, "payload": {}, "callback_url": f"https://h{i}.slow.example/"} for i in range(20)]
    refused = hostile.post("/api/jobs/batch/", json={"jobs": jobs})
    assert refused.status_code == 400, refused.text

    # When: another client submits a job whose callback host resolves at once (an hour ahead:
    # the session's worker leaves it alone)
    later = (timezone.now() + timedelta(hours=1)).isoformat()
    response, seconds = timed(lambda: other.post("/api/jobs/", json={
        "job_name": HELLO, "payload": {}, "run_at": later, "callback_url": "https://hooks.fine.example/in",
    }))

    # Then: it is accepted, without waiting behind the other client's lookups
    assert response.status_code == 202, response.text
    assert seconds < MARGIN


def test_a_client_past_its_share_of_lookups_is_refused_in_bounded_time_and_others_are_answered(
    make_api: Callable[..., Api], name_server: SlowNameServer, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given: a client with two submissions (its share here) waiting on names its name server does
    # not answer for, each holding one of the server's threads, and two more waiting for a place
    # (3 s here, and lookups that give up after 6: the requests below, slow on a busy machine,
    # are sent while both still wait, and no place frees for them)
    settings.CALLBACK_RESOLVE_MAX_PER_CLIENT = 2
    settings.CALLBACK_RESOLVE_SECONDS = budget = 6.0
    monkeypatch.setattr(addresses, "PLACE_WAIT_SECONDS", 3.0)
    hostile, other = make_api(), make_api()
    answers: dict[str, tuple[Any, float]] = {}

    def submit(host: str) -> None:
        answers[host] = timed(lambda: hostile.post("/api/jobs/", json={
            "job_name": HELLO, "payload": {}, "callback_url": f"https://{host}/hook"}))

    looking_up = [threading.Thread(target=submit, args=(f"h{i}.slow.example",)) for i in range(2)]
    for thread in looking_up:
        thread.start()
    deadline = time.monotonic() + 10
    while len(name_server.asked) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(name_server.asked) == 2
    waiting = [threading.Thread(target=submit, args=(f"w{i}.slow.example",)) for i in range(2)]
    for thread in waiting:
        thread.start()
    # (nothing a client sees tells a request waiting for a place from one on its way to it)
    while addresses._waiting.get(hostile.client.pk, 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert addresses._waiting.get(hostile.client.pk) == 2

    # When: it sends a fifth, a batch, and an endpoint on names of its own; and another client
    # submits with a callback host and without one (an hour ahead: the session's worker leaves them alone)
    later = (timezone.now() + timedelta(hours=1)).isoformat()
    fifth, fifth_seconds = timed(lambda: hostile.post("/api/jobs/", json={
        "job_name": HELLO, "payload": {}, "callback_url": "https://h2.slow.example/hook"}))
    batch = hostile.post("/api/jobs/batch/", json={"jobs": [
        {"job_name": HELLO, "payload": {}, "callback_url": f"https://b{i}.slow.example/"} for i in range(3)]})
    endpoint = hostile.post("/api/webhook-endpoints/", json={"url": "https://e.slow.example/"})
    still_waiting = all(thread.is_alive() for thread in looking_up + waiting)
    with_callback, callback_seconds = timed(lambda: other.post("/api/jobs/", json={
        "job_name": HELLO, "payload": {}, "run_at": later, "callback_url": "https://hooks.fine.example/in"}))
    without, without_seconds = timed(lambda: other.post("/api/jobs/", json={
        "job_name": HELLO, "payload": {}, "run_at": later}))
    for thread in looking_up + waiting:
        thread.join(budget + MARGIN + 30)

    # Then: the client's fifth, its batch and its endpoint were refused at once, saying when to
    # retry, while the others waited
    for response in (fifth, batch, endpoint):
        assert response.status_code == 429, response.text
        assert response.json()["error"]["code"] == "too_many_callback_lookups"
        assert response.json()["error"]["details"] == {"limit": 2}
        assert response.headers["Retry-After"] == "3"
    assert fifth_seconds < addresses.PLACE_WAIT_SECONDS
    assert still_waiting
    # And those waiting for a place were refused once they had waited for it, no place freeing
    for host in ("w0.slow.example", "w1.slow.example"):
        response, seconds = answers[host]
        assert response.status_code == 429, response.text
        assert response.json()["error"]["code"] == "too_many_callback_lookups"
        assert response.headers["Retry-After"] == "3"
        assert addresses.PLACE_WAIT_SECONDS <= seconds < addresses.PLACE_WAIT_SECONDS + MARGIN
    # (none of their names was looked up) while those looking up were refused at the budget's end
    assert sorted(host for host in name_server.asked if host.endswith(".slow.example")) == [
        "h0.slow.example", "h1.slow.example"]
    for host in ("h0.slow.example", "h1.slow.example"):
        response, seconds = answers[host]
        assert response.status_code == 400, response.text
        assert seconds < budget + MARGIN
    # And the other client's were accepted without waiting behind them
    assert with_callback.status_code == 202, with_callback.text
    assert without.status_code == 202, without.text
    assert callback_seconds < MARGIN and without_seconds < MARGIN

    # And once its waits have ended, the client looks names up again
    name_server.delay = 0.0
    again = hostile.post("/api/jobs/", json={"job_name": HELLO, "payload": {}, "run_at": later,
                                             "callback_url": "https://hooks.fine.example/again"})
    assert again.status_code == 202, again.text


def test_a_burst_of_submissions_whose_names_resolve_is_accepted_whole(
    make_api: Callable[..., Api], name_server: SlowNameServer
) -> None:
    # Given: a client whose name server answers each name in 100 ms
    name_server.delay = 0.1
    api = make_api()
    later = (timezone.now() + timedelta(hours=1)).isoformat()
    answers: list[int] = []

    def submit(i: int) -> None:
        answers.append(api.post("/api/jobs/", json={
            "job_name": HELLO, "payload": {}, "run_at": later, "callback_url": f"https://n{i}.slow.example/"
        }).status_code)

    # When: it sends twice its share of places (CALLBACK_RESOLVE_MAX_PER_CLIENT, 8) at once
    burst = [threading.Thread(target=submit, args=(i,)) for i in range(16)]
    started = time.monotonic()
    for thread in burst:
        thread.start()
    for thread in burst:
        thread.join(30)
    seconds = time.monotonic() - started

    # Then: every one was accepted, the later ones having waited for a place a moment
    assert answers == [202] * 16
    assert len(name_server.asked) == 16
    assert seconds < MARGIN


def test_a_repeat_of_a_keyed_submission_or_batch_answers_what_the_first_made_while_lookups_are_full(
    make_api: Callable[..., Api], name_server: SlowNameServer, settings: Any
) -> None:
    # Given: a job and a batch accepted with their Idempotency-Keys, then the client's place (one
    # here) and its waiting room taken by submissions on names its name server does not answer for
    settings.CALLBACK_RESOLVE_MAX_PER_CLIENT = 1
    api = make_api()
    later = (timezone.now() + timedelta(hours=1)).isoformat()
    one = {"job_name": HELLO, "payload": {}, "run_at": later, "callback_url": "https://hooks.fine.example/a"}
    batch = {"jobs": [one, {**one, "payload": {"message": "two"}}]}
    first = api.post("/api/jobs/", json=one, headers={"Idempotency-Key": "one"})
    first_batch = api.post("/api/jobs/batch/", json=batch, headers={"Idempotency-Key": "batch"})
    assert first.status_code == first_batch.status_code == 202
    hanging = [threading.Thread(target=api.post, args=("/api/jobs/",), kwargs={"json": {
        "job_name": HELLO, "payload": {}, "callback_url": f"https://h{i}.slow.example/"}}) for i in range(2)]
    for thread in hanging:
        thread.start()
    deadline = time.monotonic() + 10
    while addresses._waiting.get(api.client.pk, 0) < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    # (a new request is refused now)
    refused = api.post("/api/jobs/", json=one)
    assert refused.status_code == 429, refused.text
    assert "1 looking up at once and 1 more waiting" in refused.json()["error"]["message"]

    # When: the client repeats both (it never saw the answers)
    again = api.post("/api/jobs/", json=one, headers={"Idempotency-Key": "one"})
    again_batch = api.post("/api/jobs/batch/", json=batch, headers={"Idempotency-Key": "batch"})
    name_server.ended.set()
    for thread in hanging:
        thread.join(BUDGET + MARGIN + 30)

    # Then: each answers what the first made, as any repeat does, not a 429 (which would tell the
    # client its jobs were never accepted)
    assert again.status_code == 202, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again_batch.status_code == 202, again_batch.text
    assert [job["id"] for job in again_batch.json()["jobs"]] == [job["id"] for job in first_batch.json()["jobs"]]
