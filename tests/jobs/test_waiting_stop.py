"""Waits and streams when their gunicorn worker stops gracefully (SIGTERM at every deploy, and
the `max_requests` recycle): each wait answers at once with the job as it is and each stream
ends cleanly, resumable with Last-Event-ID, instead of being cut off unanswered when the worker
exits after graceful_timeout (20 s)."""
from __future__ import annotations

import http.client
import json
import signal
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from django.utils import timezone

from tests.conftest import Api, serving
from tests.jobs.test_streams import messages
from tests.jobs.test_waiting_served import _long_history, _open_unread_stream

# Well under graceful_timeout (20 s), after which a worker that did not answer exits anyway.
ANSWERED_WITHIN_SECONDS = 8
# Long enough for a request sent to be read and waiting in the worker.
SETTLE_SECONDS = 1.5


@pytest.fixture
def gunicorn(api: Api, tmp_path: Path) -> Iterator[tuple[Api, Any]]:
    """A gunicorn of this test's own (scripts/web), since the test stops it."""
    with serving(api, tmp_path / "gunicorn.log") as server:
        yield server


def _later() -> str:
    """A run_at an hour ahead: the job stays PENDING for the test."""
    return (timezone.now() + timedelta(hours=1)).isoformat()


def _send(api: Api, method: str, path: str, body: dict[str, Any] | None = None) -> http.client.HTTPConnection:
    """A `Prefer: wait=50` request sent, its answer not read yet."""
    address = urlsplit(api.base_url)
    conn = http.client.HTTPConnection(address.hostname or "", address.port, timeout=ANSWERED_WITHIN_SECONDS)
    headers = api.headers({"Prefer": "wait=50", "Content-Type": "application/json"})
    conn.request(method, path, body=json.dumps(body) if body else None, headers=headers)
    return conn


def _answer(conn: http.client.HTTPConnection) -> tuple[int, dict[str, str], dict[str, Any]]:
    response = conn.getresponse()
    answer = response.status, dict(response.getheaders()), json.loads(response.read())
    conn.close()
    return answer


def test_waits_answer_with_the_job_as_it_is_when_the_server_stops(gunicorn: tuple[Api, Any]) -> None:
    served, master = gunicorn
    job = served.submit("api.tasks.hello_world", {"message": "later"}, run_at=_later())
    read = _send(served, "GET", f"/api/jobs/{job['id']}/")
    submit = _send(served, "POST", "/api/jobs/", {"job_name": "api.tasks.hello_world", "payload": {},
                                                 "run_at": _later()})
    time.sleep(SETTLE_SECONDS)

    master.send_signal(signal.SIGTERM)
    began = time.monotonic()
    read_status, read_headers, read_job = _answer(read)
    submit_status, submit_headers, submitted = _answer(submit)

    assert time.monotonic() - began < ANSWERED_WITHIN_SECONDS
    assert (read_status, read_job["id"], read_job["status"]) == (200, job["id"], "PENDING")
    assert read_headers["Preference-Applied"] == "wait=50"
    # The submitter learns its job's id: it has no reason to submit it again.
    assert (submit_status, submitted["status"]) == (202, "PENDING")
    assert submit_headers["Preference-Applied"] == "wait=50"


def test_streams_end_when_the_server_stops_and_resume_losing_nothing(api: Api, gunicorn: tuple[Api, Any]) -> None:
    served, master = gunicorn
    job = served.submit("api.tasks.hello_world", {"message": "later"}, run_at=_later())
    timeout = (5, ANSWERED_WITHIN_SECONDS)
    headers = {"Accept": "text/event-stream"}
    job_stream = served.get(f"/api/jobs/{job['id']}/events/", stream=True, headers=headers, timeout=timeout)
    client_stream = served.get("/api/events/", stream=True, headers=headers, timeout=timeout)
    job_messages, client_messages = messages(job_stream), messages(client_stream)
    assert next(job_messages) == next(client_messages) == {"retry": "1000"}  # both open and waiting

    master.send_signal(signal.SIGTERM)
    began = time.monotonic()
    job_rest, client_rest = list(job_messages), list(client_messages)  # to each stream's end

    assert time.monotonic() - began < ANSWERED_WITHIN_SECONDS
    # Each ends with the id to resume from, though it sent no event of its own.
    assert job_rest[-1] == {"id": "0"}
    resume_from = client_rest[-1]["id"]
    # A job of the client's that starts while it reconnects (to another server: the live one)...
    created = api.submit("api.tasks.hello_world", {"message": "while reconnecting"})
    resumed = api.get("/api/events/", stream=True, headers={**headers, "Last-Event-ID": resume_from}, timeout=30)
    first = next(m for m in messages(resumed) if "event" in m)
    resumed.close()
    # ... is in the resumed stream.
    assert (first["event"], first["data"]["data"]["id"]) == ("job.started", created["id"])


def test_waits_answer_when_max_requests_recycles_the_worker(api: Api, tmp_path: Path) -> None:
    with serving(api, tmp_path / "gunicorn.log", GUNICORN_CMD_ARGS="--max-requests 10 --max-requests-jitter 0") as (
        served, _,
    ):
        job = served.submit("api.tasks.hello_world", {"message": "later"}, run_at=_later())
        read = _send(served, "GET", f"/api/jobs/{job['id']}/")
        time.sleep(SETTLE_SECONDS)

        for _ in range(10):  # the worker reaches its max_requests among these and is replaced
            assert requests.get(f"{served.base_url}/healthz", timeout=30).status_code == 200
        status, _, answered = _answer(read)

    assert (status, answered["status"]) == (200, "PENDING")


def test_a_stream_whose_client_reads_nothing_lets_the_server_stop_at_once(gunicorn: tuple[Api, Any]) -> None:
    # Given: a stream replaying 16 MB of the client's events to a client that reads none of
    # them, its write blocked (for up to API_STREAM_WRITE_TIMEOUT_SECONDS, 30 s, or twice that).
    served, master = gunicorn
    _long_history(served)
    unread = _open_unread_stream(served)
    try:
        time.sleep(SETTLE_SECONDS * 2)

        # When: the server stops gracefully.
        master.send_signal(signal.SIGTERM)
        began = time.monotonic()
        master.wait(timeout=40)

        # Then: the stream's write ends with the stop and the worker exits at once. Before, its
        # thread blocked in the write held the stop until graceful_timeout (20 s) killed it.
        assert time.monotonic() - began < ANSWERED_WITHIN_SECONDS
    finally:
        unread.close()
