"""Waits and streams as production serves them: gunicorn's threaded workers (scripts/web), the
process's one Redis listener, a real worker. A hung-up client frees its thread at once, and
200 waiters cost the database nothing while they wait."""
from __future__ import annotations

import socket
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from django.db import connection
from django.utils import timezone

from core.concurrency import CONNECTIONS_BEYOND_TURNS
from jobs.models import Job, JobEvent
from tests.conftest import SERVED_APP_NAME, SERVED_THREADS, Api

WAITERS = 200


def _scheduled(api: Api) -> dict[str, Any]:
    """A job that stays PENDING for the test: scheduled an hour from now."""
    later = (timezone.now() + timedelta(hours=1)).isoformat()
    return api.submit("api.tasks.hello_world", {"message": "later"}, run_at=later)


def _open_wait(api: Api, job_id: str, seconds: int = 30) -> socket.socket:
    address = urlsplit(api.base_url)
    sock = socket.create_connection((address.hostname, address.port))
    sock.sendall(
        f"GET /api/jobs/{job_id}/ HTTP/1.1\r\nHost: {address.netloc}\r\n"
        f"Authorization: Bearer {api.key}\r\nPrefer: wait={seconds}\r\n\r\n".encode()
    )
    return sock


def test_a_client_that_hangs_up_frees_its_thread_at_once(served: Api) -> None:
    # Given: a process of SERVED_THREADS threads, every one of them waiting.
    job = _scheduled(served)
    waits = [_open_wait(served, job["id"]) for _ in range(SERVED_THREADS)]
    time.sleep(1)
    with pytest.raises(requests.Timeout):
        served.get(f"/api/jobs/{job['id']}/", timeout=1)  # no thread left to answer

    # When: the waiting clients hang up.
    for sock in waits:
        sock.close()

    # Then: their threads answer the next request at once...
    began = time.monotonic()
    assert served.get(f"/api/jobs/{job['id']}/", timeout=5).status_code == 200
    assert time.monotonic() - began < 1
    # ... and whichever of its many threads serve the next requests, the process keeps a few
    # database connections open, not one per thread (core.concurrency).
    for _ in range(100):
        assert served.get(f"/api/jobs/{job['id']}/", timeout=5).status_code == 200
    assert _connections() <= 1 + CONNECTIONS_BEYOND_TURNS


def _connections() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [SERVED_APP_NAME])
        return int(cursor.fetchone()[0])


def _transactions() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
        cursor.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()")
        return int(cursor.fetchone()[0])


def _per_second(seconds: float = 3) -> float:
    before = _transactions()
    time.sleep(seconds)
    return (_transactions() - before) / seconds


def test_waiters_cost_the_database_nothing_while_they_wait(served: Api) -> None:
    job = _scheduled(served)
    idle = _per_second()  # beat, the worker, this test's own reads

    waits = [_open_wait(served, job["id"], seconds=60) for _ in range(WAITERS)]
    time.sleep(3)  # each has read the job once by now
    waiting = _per_second()
    for sock in waits:
        sock.close()

    assert waiting - idle < 10, (idle, waiting)


def test_a_wait_through_gunicorn_answers_the_final_job(served: Api) -> None:
    response = served.post(
        "/api/jobs/", json={"job_name": "api.tasks.hello_world", "payload": {}}, headers={"Prefer": "wait=10"}
    )

    assert response.status_code == 202
    assert response.json()["status"] == "SUCCESS"


def test_a_stream_through_gunicorn_is_chunked_and_ends_with_the_final_event(served: Api) -> None:
    created = served.submit("api.tasks.long_running_task", {"duration": 1, "message": "m"})

    response = served.get(f"/api/jobs/{created['id']}/events/", stream=True, headers={"Accept": "text/event-stream"})
    events = [line.split(": ", 1)[1] for line in response.iter_lines(chunk_size=1, decode_unicode=True)
              if line.startswith("event: ")]

    assert response.headers["X-Accel-Buffering"] == "no"
    assert events[-1] == "job.succeeded"


def _open_unread_stream(api: Api) -> socket.socket:
    """The client's stream from its first event, by a client that reads none of it: a receive
    buffer of a few KiB, never emptied, so the server's writes to it block once its own fill."""
    address = urlsplit(api.base_url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: the window it offers
    sock.connect((address.hostname, address.port))
    sock.sendall(
        f"GET /api/events/ HTTP/1.1\r\nHost: {address.netloc}\r\nAuthorization: Bearer {api.key}\r\n"
        f"Accept: text/event-stream\r\nLast-Event-ID: 0\r\n\r\n".encode()
    )
    # Its status line read (12 bytes of the window): the server has let the stream in, its place
    # taken. Returned at once, a loaded machine could let the client's next request in first.
    sock.settimeout(10)
    assert sock.recv(12, socket.MSG_WAITALL) == b"HTTP/1.1 200"
    sock.settimeout(None)
    return sock


def _long_history(api: Api) -> Job:
    """A job of the client's with 16 MB of events (its history, which a stream from
    Last-Event-ID 0 replays), more than a socket's buffers hold on either side. Claimed for
    dispatch, as a submission leaves it: the suite's beat sweeps a committed job left unclaimed,
    and its worker would run it, its events joining the history as the streams read it."""
    assert api.client is not None
    job = Job.objects.create(owner=api.client, job_name="api.tasks.hello_world", dispatched_at=timezone.now())
    body = '{"data": "' + "x" * 16_000 + '"}'
    JobEvent.objects.bulk_create(
        JobEvent(job=job, owner=api.client, job_name=job.job_name, event_type="job.progress", body=body)
        for _ in range(1000)
    )
    return job


def test_streams_whose_client_reads_nothing_hold_no_database_connection(served: Api) -> None:
    # Given: a client with 16 MB of events.
    job = _long_history(served)

    # When: it opens 20 streams of them and reads none, so that each stream's write blocks.
    streams = [_open_unread_stream(served) for _ in range(20)]
    try:
        time.sleep(3)  # each has read its first batch and is writing it by now

        # Then: the process holds no more database connections than when its threads wait for
        # events (core.concurrency), not one per stream stuck writing to its client.
        assert _connections() <= 1 + CONNECTIONS_BEYOND_TURNS
        assert served.get(f"/api/jobs/{job.id}/", timeout=5).status_code == 200
    finally:
        for sock in streams:
            sock.close()


def _stream_status(api: Api) -> int:
    response = api.get("/api/events/", stream=True, headers={"Accept": "text/event-stream"}, timeout=5)
    response.close()
    return response.status_code


def _stream_status_once_let_in(api: Api, *, seconds: float = 20) -> int:
    """The status of the client's first stream not refused (429) within `seconds`, or 429."""
    started, status = time.monotonic(), 429
    while status == 429 and time.monotonic() - started < seconds:
        time.sleep(0.5)
        status = _stream_status(api)
    return status


@pytest.mark.parametrize("served_env", [{"API_MAX_WAITERS_PER_CLIENT": "1", "API_STREAM_WRITE_TIMEOUT_SECONDS": "2",
                                        "API_STREAM_HEARTBEAT_SECONDS": "1"}])
def test_a_stream_whose_client_reads_nothing_gives_its_place_back_within_the_write_timeout(
    served: Api, tmp_path: Path
) -> None:
    # Given: a client with 16 MB of events and a share of one stream, which a stream of them
    # it reads nothing of takes.
    _long_history(served)
    unread = _open_unread_stream(served)
    try:
        assert _stream_status(served) == 429

        # When: its writes have sent nothing for the write timeout (2 s; a send that sent part of
        # a chunk before blocking gives up one timeout later, so 4 s at most once it blocks: 5-6
        # s from the stream's start here, alone on the machine).
        status = _stream_status_once_let_in(served)

        # Then: the stream has ended and its place is free: the client opens a stream again.
        # Before, the stream held its thread and the client's place until TCP gave up on the
        # connection (never, while the client kept it open and acknowledged nothing new).
        assert status == 200, "still refused after 20 s"
        # And the server says so in one WARNING line, not as an ERROR with a traceback (gunicorn's
        # own "Socket error processing request.", which paged for a client's doing).
        log = tmp_path / "gunicorn.log"
        for _ in range(50):
            if "Closed a connection" in log.read_text():
                break
            time.sleep(0.1)
        lines = log.read_text().splitlines()
        assert [line for line in lines if "Closed a connection" in line and "[WARNING]" in line], lines
        assert not [line for line in lines if "Traceback" in line or "[ERROR]" in line], lines
    finally:
        unread.close()


@pytest.mark.parametrize("served_env", [{"API_MAX_WAITERS_PER_CLIENT": "1", "API_STREAM_WRITE_TIMEOUT_SECONDS": "2",
                                        "API_STREAM_HEARTBEAT_SECONDS": "1"}])
def test_an_idle_stream_whose_client_reads_nothing_gives_its_place_back_within_the_write_timeout(
    served: Api,
) -> None:
    # Given: a client with 12 KB of events (more than the window its receive buffer offers, less
    # than the server's send buffer: the stream's writes never block, it waits for events), and a
    # share of one stream, which a stream of them it reads nothing of takes (the job claimed for
    # dispatch, as _long_history's, so that the suite's worker adds no event of its own).
    assert served.client is not None
    job = Job.objects.create(owner=served.client, job_name="api.tasks.hello_world", dispatched_at=timezone.now())
    JobEvent.objects.bulk_create(
        JobEvent(job=job, owner=served.client, job_name=job.job_name, event_type="job.progress",
                 body='{"data": "' + "x" * 4_000 + '"}')
        for _ in range(3)
    )
    unread = _open_unread_stream(served)
    try:
        assert _stream_status(served) == 429

        # When: the client's window has stayed shut for the write timeout (TCP_USER_TIMEOUT).
        status = _stream_status_once_let_in(served)

        # Then: the connection is closed, the stream's wait sees it gone, and its place is free.
        # Before, a stream idling between events held it until its client hung up: its writes
        # (heartbeats of 13 bytes) never block, so the send timeout alone never fired.
        assert status == 200, "still refused after 20 s"
    finally:
        unread.close()


@pytest.mark.parametrize("served_env", [{"LOG_LEVEL": "INFO"}])
def test_a_wait_whose_client_hangs_up_is_logged_as_its_client_closing_it(served: Api, tmp_path: Path) -> None:
    # Given: a client waiting for a job that stays pending, the server logging each request.
    job = _scheduled(served)
    wait = _open_wait(served, job["id"])
    time.sleep(1)  # its wait has begun

    # When: it hangs up.
    wait.close()

    # Then: the request's one line says so (499, nginx's "Client Closed Request"), at INFO, as
    # any request's: the client's own doing, like its other 4xx, is no WARNING (nor Django's
    # "Unknown Status Code" line).
    log = tmp_path / "gunicorn.log"
    for _ in range(50):
        if "status=499" in log.read_text():
            break
        time.sleep(0.1)
    lines = [line for line in log.read_text().splitlines() if "api/jobs/<uuid:job_id>/" in line]
    assert len(lines) == 1 and "status=499" in lines[0] and "[info" in lines[0], log.read_text()
    assert "Client Closed Request" not in log.read_text() and "Unknown Status Code" not in log.read_text()
