"""`Prefer: wait` end to end: HTTP -> the live server's waiter -> a real worker -> the Redis
wake-up -> the answer, in one request. Through gunicorn, with hang-ups and the database's cost:
test_waiting_served.py."""
from __future__ import annotations

import http.client
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.test import override_settings
from django.utils import timezone

from jobs import inputs, waiting, wakeups
from tests.conftest import Api

HELLO = {"job_name": "api.tasks.hello_world", "payload": {"message": "there"}}


def test_a_waited_submit_answers_the_final_job_in_one_request(api: Api) -> None:
    response = api.post("/api/jobs/", json=HELLO, headers={"Prefer": "wait=10"})

    assert response.status_code == 202
    assert response.headers["Preference-Applied"] == "wait=10"
    assert response.headers["Location"] == f"/api/jobs/{response.json()['id']}/"
    assert response.json()["status"] == "SUCCESS"
    assert response.json()["result"] == "hello world there"


def test_a_short_wait_on_a_long_job_answers_started_after_about_its_seconds(api: Api) -> None:
    created = api.submit("api.tasks.long_running_task", {"duration": 5, "message": "m"})
    api.wait(created["id"], until=lambda job: job["status"] == "STARTED")

    began = time.monotonic()
    response = api.get(f"/api/jobs/{created['id']}/", headers={"Prefer": "wait=1"})
    took = time.monotonic() - began

    assert response.status_code == 200
    assert response.headers["Preference-Applied"] == "wait=1"
    assert response.json()["status"] == "STARTED"
    assert 0.9 <= took < 2.5


def test_a_waited_read_answers_as_soon_as_the_job_ends(api: Api) -> None:
    created = api.submit("api.tasks.long_running_task", {"duration": 1, "message": "m"})

    began = time.monotonic()
    response = api.get(f"/api/jobs/{created['id']}/", headers={"Prefer": "wait"})

    assert response.json()["status"] == "SUCCESS"
    assert time.monotonic() - began < 10
    assert response.headers["Preference-Applied"] == "wait=60"


def test_without_prefer_nothing_waits_and_no_preference_is_applied(api: Api) -> None:
    response = api.post("/api/jobs/", json=HELLO)

    assert response.json()["status"] == "PENDING"
    assert "Preference-Applied" not in response.headers


def test_a_jobs_answer_names_prefer_in_vary_whether_or_not_it_waited(api: Api) -> None:
    # RFC 7240 section 2: a cache that keys the answer on the URL alone would give a poll the
    # answer of a wait, or a wait the poll's.
    created = api.submit("api.tasks.hello_world", {"message": "x"})

    polled = api.get(f"/api/jobs/{created['id']}/")
    waited = api.get(f"/api/jobs/{created['id']}/", headers={"Prefer": "wait=5"})

    for response in (polled, waited):
        assert response.status_code == 200
        assert "prefer" in [name.strip().lower() for name in response.headers.get("Vary", "").split(",")]


def test_waiting_on_another_clients_job_is_404(api: Api, make_api) -> None:  # type: ignore[no-untyped-def]
    created = api.submit("api.tasks.long_running_task", {"duration": 2, "message": "m"})

    response = make_api().get(f"/api/jobs/{created['id']}/", headers={"Prefer": "wait=5"})

    assert response.status_code == 404


class _Request:
    def __init__(self, prefer: str) -> None:
        self.headers = {"Prefer": prefer}


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("wait=5", 5), ("WAIT=5", 5), ("respond-async, wait=7", 7), ('wait="3"', 3),
        ("wait", 60), ("wait=600", 60), ("wait=0", None), ("wait=soon", None), ("", None),
        ("return=minimal", None), ("wait=5; foo=bar", 5), ("wait=\u00b3", None), ("wait=" + "9" * 5000, 60),
        ('foo="a, wait=1", wait=5', 5), ('foo="x,wait=1"', None), ('foo="a\\", wait=1", wait=7', 7),
        ('wait=5;foo="a,b"', 5), ("respond-async; wait=5", None), ("wait=4, wait=9", 4), ("  WAIT = 3 ", 3),
        # A `wait=` of no seconds is not the bare `wait` (the longest wait): not understood, ignored
        ("wait=", None), ('wait=""', None), ("wait=, respond-async", None), ("wait= ; foo=bar", None),
        ("wait; foo=bar", 60),
        # HTTP's whitespace is SP and HTAB: a no-break space (Latin-1 0xa0) is none, a tab is
        ("\twait=\t2", 2), ("\xa0wait=5", None), ("wait=\xa05", None), ("wait=5\xa0", None), ("\u2003wait", None),
        # and a preference is read to its end (or its parameters' `;`): a malformed one is ignored
        # whole, not read as the bare `wait` before what broke it (the longest wait)
        ("wait\xa0=5", None), ("wait\u2003=5", None), ("wait/5", None), ("wait x=5", None), ("wait=5 x", None),
        ('wait="3"x', None), ("wait\xa0", None), ("wait =5 ;", 5), ("wait\t; foo=bar", 60), ("wait x, wait=4", 4),
    ],
)
def test_prefer_wait_is_read_as_rfc_7240_has_it(header: str, seconds: int | None) -> None:
    with override_settings(API_MAX_WAIT_SECONDS=60):
        assert inputs.prefer_wait(_Request(header)) == seconds  # type: ignore[arg-type]


def test_a_wait_inside_another_preferences_quoted_value_is_not_a_wait(api: Api) -> None:
    # RFC 7240's values may be quoted strings, commas and all: only the preference after the
    # quoted one asks a wait.
    created = api.post("/api/jobs/", json=HELLO, headers={"Prefer": "wait=10"}).json()
    path = f"/api/jobs/{created['id']}/"

    after = api.get(path, headers={"Prefer": 'note="soon, wait=1", wait=5'})
    inside = api.get(path, headers={"Prefer": 'note="soon, wait=1"'})

    assert after.headers["Preference-Applied"] == "wait=5"
    assert "Preference-Applied" not in inside.headers


def test_two_prefer_lines_are_read_as_one_list(api: Api) -> None:
    created = api.post("/api/jobs/", json=HELLO, headers={"Prefer": "wait=10"}).json()
    address = urlsplit(api.base_url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    connection.putrequest("GET", f"/api/jobs/{created['id']}/")
    connection.putheader("Authorization", f"Bearer {api.key}")
    connection.putheader("Prefer", "respond-async")
    connection.putheader("Prefer", "wait=3")
    connection.endheaders()

    response = connection.getresponse()

    assert response.status == 200
    assert response.getheader("Preference-Applied") == "wait=3"
    connection.close()


def test_a_header_of_unclosed_quotes_or_long_spaces_is_read_in_linear_time() -> None:
    # Quadratic, each took 11 s of CPU; linear, milliseconds.
    began = time.process_time()
    with override_settings(API_MAX_WAIT_SECONDS=60):
        assert inputs.prefer_wait(_Request('"\\' * 32_000)) is None  # type: ignore[arg-type]
        assert inputs.prefer_wait(_Request('wait="' + '\\"' * 32_000)) is None  # type: ignore[arg-type]
        # Spaces on both sides of an empty value, the preference's end to be matched after them
        assert inputs.prefer_wait(_Request("wait" + " " * 32_000 + "x")) is None  # type: ignore[arg-type]
        assert inputs.prefer_wait(_Request("wait=" + " " * 32_000 + "x y")) is None  # type: ignore[arg-type]
    assert time.process_time() - began < 1


def test_past_the_processs_waiters_a_wait_is_not_applied_and_a_stream_is_503(api: Api) -> None:
    created = api.submit("api.tasks.long_running_task", {"duration": 2, "message": "m"})

    with override_settings(API_MAX_WAITERS_PER_PROCESS=0):
        waited = api.get(f"/api/jobs/{created['id']}/", headers={"Prefer": "wait=5"})
        streamed = api.get(f"/api/jobs/{created['id']}/events/", headers={"Accept": "text/event-stream"})

    assert waited.status_code == 200 and "Preference-Applied" not in waited.headers
    assert waited.json()["status"] in {"PENDING", "STARTED"}
    assert streamed.status_code == 503 and streamed.json()["error"]["code"] == "too_many_streams"
    assert streamed.headers["Retry-After"] == "1"


def test_past_the_clients_share_its_waits_are_not_applied_and_its_streams_are_429_while_others_stream(
    api: Api, make_api  # type: ignore[no-untyped-def]
) -> None:
    created = api.submit("api.tasks.long_running_task", {"duration": 2, "message": "m"})
    other = make_api()
    sse = {"Accept": "text/event-stream"}

    with override_settings(API_MAX_WAITERS_PER_CLIENT=1):
        # Given a client holding its one stream (its waiter registered before `retry:` is sent)
        held = api.get("/api/events/", stream=True, headers=sse, timeout=30)
        assert held.status_code == 200
        assert next(held.iter_lines(chunk_size=1, decode_unicode=True)).startswith("retry:")
        # When it asks to wait, and for another stream, and another client asks for a stream
        waited = api.get(f"/api/jobs/{created['id']}/", headers={"Prefer": "wait=5"})
        streamed = api.get(f"/api/jobs/{created['id']}/events/", headers=sse)
        theirs = other.get("/api/events/", stream=True, headers=sse, timeout=30)
        theirs.close()
        held.close()

    # Then its wait is not applied and its stream is refused, for it alone
    assert waited.status_code == 200 and "Preference-Applied" not in waited.headers
    assert streamed.status_code == 429 and streamed.json()["error"]["code"] == "too_many_open_streams"
    assert streamed.headers["Retry-After"] == "1"
    assert theirs.status_code == 200


@pytest.mark.parametrize(
    ("wait", "applied"),
    # To str.isdigit() a superscript (a header's byte 0xB2 or 0xB9 read as latin-1) is a digit,
    # to int() it is not: not a number, so ignored. 5,000 digits are more than int() converts:
    # a number past the cap, so the cap.
    [("\u00b2", None), ("\u00b9", None), ("9" * 5000, "wait=60")],
)
def test_a_wait_of_superscript_digits_is_ignored_and_one_of_thousands_of_digits_capped(
    api: Api, wait: str, applied: str | None
) -> None:
    # When a job is submitted and then read with that preference, each answers as usual, the
    # preference ignored or capped
    submitted = api.post("/api/jobs/", json=HELLO, headers={"Prefer": f"wait={wait}"})
    assert submitted.status_code == 202, submitted.text
    assert submitted.headers.get("Preference-Applied") == applied
    read = api.get(f"/api/jobs/{submitted.json()['id']}/", headers={"Prefer": f"wait={wait}"})
    assert read.status_code == 200, read.text
    assert read.headers.get("Preference-Applied") == applied
    # And one job was stored
    assert [job["id"] for job in api.get("/api/jobs/").json()["results"]] == [submitted.json()["id"]]


def _scheduled(api: Api) -> str:
    """A job that stays PENDING for the test (scheduled an hour from now): a wait on it times out."""
    later = (timezone.now() + timedelta(hours=1)).isoformat()
    return str(api.submit("api.tasks.hello_world", {"message": "later"}, run_at=later)["id"])


def test_a_clients_waits_at_once_take_no_more_than_its_share(
    make_api, settings: Any, two_turns: None, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    # Given a client's share of one wait, a job of its that stays pending, and a server running
    # two requests at once, each held just before its waiter is added to the process's until the
    # other gets there too (as a thread switch there may, with WEB_ACTIVE_REQUESTS other than 1)
    settings.API_MAX_WAITERS_PER_CLIENT = 1
    api = make_api()
    job_id = _scheduled(api)
    both_there = threading.Barrier(2, timeout=10)
    register = wakeups.hub.register

    def held(waiter: wakeups.Waiter, **kwargs: Any) -> str:
        both_there.wait()
        return register(waiter, **kwargs)

    monkeypatch.setattr(wakeups.hub, "register", held)

    # When it asks for two waits at once
    with ThreadPoolExecutor(2) as pool:
        waits = [pool.submit(api.get, f"/api/jobs/{job_id}/", headers={"Prefer": "wait=1"}) for _ in range(2)]
        answers = [wait.result(timeout=30) for wait in waits]

    # Then one waits out its second, the other is answered at once, its preference not applied
    assert [answer.status_code for answer in answers] == [200, 200]
    assert sorted(str(answer.headers.get("Preference-Applied")) for answer in answers) == ["None", "wait=1"]
    # And the place is free again once the wait has timed out
    monkeypatch.setattr(wakeups.hub, "register", register)
    assert api.get(f"/api/jobs/{job_id}/", headers={"Prefer": "wait=1"}).headers.get("Preference-Applied") == "wait=1"


def test_a_wait_that_fails_gives_its_place_back(
    make_api, settings: Any, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    # Given a client's share of one wait, and a wait of its that fails while it waits
    settings.API_MAX_WAITERS_PER_CLIENT = 1
    api = make_api()
    job_id = _scheduled(api)

    def broken(*args: Any) -> str:
        raise RuntimeError("the wait failed")

    monkeypatch.setattr(waiting, "idle", broken)
    assert api.get(f"/api/jobs/{job_id}/", headers={"Prefer": "wait=1"}).status_code == 500
    monkeypatch.undo()

    # When it asks to wait again, then its place is there for it
    assert api.get(f"/api/jobs/{job_id}/", headers={"Prefer": "wait=1"}).headers.get("Preference-Applied") == "wait=1"


def test_limits_count_a_wait_while_it_waits(api: Api) -> None:
    # Given a client waiting on a job that will not start for an hour
    later = (timezone.now() + timedelta(hours=1)).isoformat()
    created = api.submit("api.tasks.hello_world", {"message": "m"}, run_at=later)
    with ThreadPoolExecutor(1) as pool:
        waited = pool.submit(api.get, f"/api/jobs/{created['id']}/", headers={"Prefer": "wait=3"})

        # Then its limits count the wait while it lasts...
        deadline = time.monotonic() + 2
        while not (used := api.get("/api/limits/").json()["waits_and_streams_per_process"]["used"]):
            assert time.monotonic() < deadline, "the wait was never counted"
            time.sleep(0.05)
        assert used == 1 and not waited.done()

        # ...and no longer once it is answered
        assert waited.result(10).headers["Preference-Applied"] == "wait=3"
    assert api.get("/api/limits/").json()["waits_and_streams_per_process"]["used"] == 0
