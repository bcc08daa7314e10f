"""A request's line and headers must all arrive within WEB_HEADER_READ_SECONDS of their first bytes
(gunicorn_headers.py); past it the connection is closed unanswered and the process serves on.
Before, a client that sent `GET /healthz HTTP/1.1\\r\\nHost: ...\\r\\nX-A: ` and then nothing held
a thread for as long as it kept the connection open: WEB_THREADS such clients and /healthz got
no answer at all. Against gunicorn as production runs it (scripts/web), with few threads."""
from __future__ import annotations

import contextlib
import http.client
import logging
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

import gunicorn_headers
from gunicorn_headers import HeaderDeadline, TimedOutLines
from gunicorn_worker import JsonErrorThreadWorker
from tests.conftest import REPO, free_port, stop_process, wait_until_up, worker_env

THREADS = 4
SECONDS = 1.5  # WEB_HEADER_READ_SECONDS here

# A request's first bytes, its last header never ended.
STALLED = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: "


@contextlib.contextmanager
def serving(log_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """gunicorn as scripts/web runs it, its log to `log_path`: its port, and its process."""
    port = free_port()
    # WEB_MAX_CONNECTIONS over WEB_THREADS: connections kept alive, whose next requests are bounded too.
    env = worker_env(PORT=str(port), WEB_CONCURRENCY="1", WEB_THREADS=str(THREADS), WEB_MAX_CONNECTIONS="32",
                     DEBUG="false", WEB_HEADER_READ_SECONDS=str(SECONDS))
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(REPO / "scripts" / "web")], cwd=REPO, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/healthz", process, log_path)
        yield port, process
    finally:
        stop_process(process)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """gunicorn's port, and its log."""
    log_path = tmp_path_factory.mktemp("headers") / "web.log"
    with serving(log_path) as (port, _):
        yield port, log_path


def closed_unanswered(sock: socket.socket, timeout: float) -> float:
    """When the server closed `sock` without a byte of answer (AssertionError if it answered or
    kept it open past `timeout`)."""
    sock.settimeout(timeout)
    try:
        received = sock.recv(1024)
    except ConnectionResetError:
        received = b""
    assert received == b"", received
    return time.monotonic()


def test_stalled_headers_are_closed_after_the_limit_and_healthz_answers(server: tuple[int, Path]) -> None:
    port, log_path = server
    # Given: twice as many stalled requests as the process has threads, and a kept-alive
    # connection whose second request stalls the same way
    kept = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    kept.request("GET", "/healthz")
    assert kept.getresponse().read() and kept.sock is not None
    started = time.monotonic()
    stalled = [socket.create_connection(("127.0.0.1", port)) for _ in range(2 * THREADS)]
    try:
        for sock in stalled:
            sock.sendall(STALLED)
        kept.sock.sendall(STALLED)

        # When: the limit is over, twice (the second half waited for a thread)
        ended = [closed_unanswered(sock, timeout=10) for sock in [*stalled, kept.sock]]

        # Then: each closed unanswered, none before the limit; and /healthz answers at once
        assert min(ended) - started >= SECONDS
        assert max(ended) - started < 2 * SECONDS + 2, max(ended) - started
        asked = time.monotonic()
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        assert time.monotonic() - asked < 1
    finally:
        for sock in stalled:
            sock.close()
        kept.close()
    # and the log says so in one line, not nine (at most one a minute)
    time.sleep(0.2)
    lines = [line for line in log_path.read_text().splitlines() if "did not all arrive within" in line]
    assert len(lines) == 1, lines
    assert "within 1.5 s (WEB_HEADER_READ_SECONDS" in lines[0] and "ip=127.0.0.1" in lines[0], lines[0]


def test_headers_sent_slowly_within_the_limit_are_answered(server: tuple[int, Path]) -> None:
    port, _ = server
    pieces = [b"GET /heal", b"thz HTTP/1.1\r\n", b"Host: 127.0.0.1\r\nX-A: ", b"b\r\nConnection: close\r\n", b"\r\n"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(0.25)  # 1.25 s in all, within the 1.5 s

        answer = http.client.HTTPResponse(sock)
        answer.begin()

        assert answer.status == 200, answer.read()


def test_headers_dripping_past_the_limit_are_closed_however_often_a_byte_comes(server: tuple[int, Path]) -> None:
    # A byte every 0.2 s: each read waits far less than the limit, the whole far more
    port, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nX-A: ")
        try:
            for _ in range(30):
                time.sleep(0.2)
                sock.sendall(b"a")
        except OSError:  # closed by the server: what is asserted
            pass

        ended = closed_unanswered(sock, timeout=10)

        assert SECONDS <= ended - started < SECONDS + 1, ended - started


def test_bytes_already_there_are_not_read_once_the_limit_is_over() -> None:
    # A client whose every byte is there when the next read comes: the read that finds them
    # costs no timeout set, and the limit is still checked before it
    ours, client = socket.socketpair()
    with ours, client:
        stand_in = HeaderDeadline(ours, 0.2)
        client.sendall(b"GET /healthz HTTP/1.1\r\n")
        assert stand_in.recv(8192) == b"GET /healthz HTTP/1.1\r\n"  # the time runs from here
        time.sleep(0.3)
        client.sendall(b"X-A: b\r\n")

        assert stand_in.recv(8192) == b""
        assert stand_in.timed_out and not stand_in.timeout_set


def test_every_connection_closed_is_counted_in_the_lines_however_the_flood_ends(tmp_path: Path) -> None:
    # Given: a process of its own, and a flood of stalled requests that stops
    with serving(tmp_path / "web.log") as (port, process):
        stalled = [socket.create_connection(("127.0.0.1", port)) for _ in range(2 * THREADS + 1)]
        try:
            for sock in stalled:
                sock.sendall(STALLED)
            for sock in stalled:
                closed_unanswered(sock, timeout=10)
        finally:
            for sock in stalled:
                sock.close()

        # When: no more come, and the process stops within the minute
        time.sleep(0.2)
        stop_process(process)

    # Then: its lines count all nine, the first at once and the rest as it stopped
    lines = [line for line in (tmp_path / "web.log").read_text().splitlines() if "did not all arrive within" in line]
    counts = [int(re.search(r"Closed (\d+) connection", line)[1]) for line in lines]  # type: ignore[index]
    assert counts[0] == 1 and sum(counts) == 2 * THREADS + 1, lines


def test_the_lines_held_in_a_minute_are_said_once_it_is_over_though_no_more_come(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(gunicorn_headers, "time", type("Clock", (), {"monotonic": staticmethod(lambda: now[0])}))
    lines = TimedOutLines()

    # The first of a flood of 50 is said at once, the others held
    said = [lines.closed(f"10.0.0.{n}") for n in range(50)]
    assert said[0] == (1, "10.0.0.0") and all(count == 0 for count, _ in said[1:])
    # and not while the minute runs: the worker's main loop asks each second (its notify)
    worker = JsonErrorThreadWorker.__new__(JsonErrorThreadWorker)
    worker.tmp = type("Tmp", (), {"notify": lambda self: None})()  # gunicorn's heartbeat file
    worker.log = logging.getLogger("tests.gunicorn_headers")
    worker.header_read_seconds, worker.header_timeouts = SECONDS, lines
    now[0] += 59
    with caplog.at_level(logging.WARNING, logger="tests.gunicorn_headers"):
        worker.notify()
        assert caplog.messages == []
        # Once it is over, every one held, with the last one's address, though no more came
        now[0] += 1
        worker.notify()
        worker.notify()
    assert len(caplog.messages) == 1, caplog.messages
    assert caplog.messages[0].startswith("Closed 49 connection(s)") and "ip=10.0.0.49:" in caplog.messages[0]
    # One more within the next minute is held, and said as the process stops
    now[0] += 1
    assert lines.closed("10.0.0.50") == (0, None)
    assert lines.due(final=True) == (1, "10.0.0.50")
