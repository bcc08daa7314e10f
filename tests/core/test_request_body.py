"""A request's body is read before it takes its turn, within WEB_BODY_READ_SECONDS in all
(core/request_body.py): a client sending its body slowly, or never, holds its own thread, never
its process's turn, and gets 408 once the time is over.

In process, through gunicorn's own reader of a loopback connection, and through gunicorn as
production runs it (`served`)."""
from __future__ import annotations

import http.client
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.core.handlers.wsgi import WSGIRequest
from django.test import Client as HttpClient
from gunicorn.config import Config
from gunicorn.http import get_parser
from gunicorn.http import wsgi as gunicorn_wsgi

from core import request_body
from core.request_body import BODY_UNREAD, FAILED, TIMED_OUT, read_body_in_time
from tests.conftest import Api

BODY = b'{"job_name": "api.tasks.hello_world", "payload": {"message": "m"}}'


# --- In process: gunicorn's reader of one connection ---------------------------------------------


@contextmanager
def gunicorn_request(sent: bytes) -> Iterator[tuple[WSGIRequest, socket.socket, socket.socket]]:
    """A Django request as gunicorn's worker makes it from what a client `sent` on a
    connection (its headers at least): the request, the server's socket and the client's."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    try:
        client.sendall(sent)
        server.setblocking(True)  # as gunicorn's thread has it
        cfg = Config()
        parser = get_parser(cfg, server, ("127.0.0.1", 40000))
        _, environ = gunicorn_wsgi.create(next(parser), server, ("127.0.0.1", 40000), ("127.0.0.1", 8000), cfg)
        yield WSGIRequest(environ), server, client
    finally:
        server.close()
        client.close()


def headers(length: int) -> bytes:
    return (
        "POST /api/jobs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


@pytest.fixture
def recvs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the recv() calls made while a body is read."""
    calls: list[int] = []
    recv = request_body._DeadlineSocket.recv

    def counted(self: Any, size: int) -> bytes:
        calls.append(size)
        return recv(self, size)

    monkeypatch.setattr(request_body._DeadlineSocket, "recv", counted)
    return calls


def drip(sock: socket.socket, data: bytes, every: float, stop: threading.Event) -> threading.Thread:
    """Send `data` a byte every `every` seconds, on a thread, until it is all sent or `stop`."""

    def run() -> None:
        for byte in data:
            if stop.wait(every):
                return
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_gunicorns_reader_is_found_through_the_body() -> None:
    # The objects read_body_in_time reaches into: a gunicorn upgrade that changes them fails here.
    with gunicorn_request(headers(len(BODY)) + BODY) as (request, server, _):
        assert request_body._gunicorn_reader(request.META).sock is server


def test_a_body_that_came_with_its_headers_is_read_without_a_socket_call(recvs: list[int]) -> None:
    with gunicorn_request(headers(len(BODY)) + BODY) as (request, server, _):
        read_body_in_time(request)

        assert recvs == []
        assert request.body == BODY
        assert server.gettimeout() is None
        assert BODY_UNREAD not in request.META


def test_the_parsers_read_of_a_body_read_early_is_the_same_bytes(settings: Any) -> None:
    from rest_framework.request import Request

    with gunicorn_request(headers(len(BODY)) + BODY) as (request, _, _):
        read_body_in_time(request)

        assert Request(request).stream.read(settings.API_MAX_BODY_BYTES + 1) is request.body


def test_a_body_arriving_in_pieces_in_time_is_read_whole(settings: Any, recvs: list[int]) -> None:
    settings.WEB_BODY_READ_SECONDS = 5
    body = b" " * 300_000 + BODY  # several recv() calls
    with gunicorn_request(headers(len(body))) as (request, server, client):
        def send() -> None:
            for piece in (body[:1000], body[1000:]):
                time.sleep(0.1)
                client.sendall(piece)

        sender = threading.Thread(target=send)
        sender.start()

        read_body_in_time(request)
        sender.join()

        assert request.body == body
        assert len(recvs) >= 2
        assert server.gettimeout() is None  # restored: blocking, as gunicorn left it
        assert BODY_UNREAD not in request.META


def test_a_dripped_body_is_cut_at_the_limit_in_all(settings: Any) -> None:
    # Given: a limit of 1 s, and a client sending a byte every 0.2 s (each recv() gets one in time)
    settings.WEB_BODY_READ_SECONDS = 1
    stop = threading.Event()
    with gunicorn_request(headers(100) + b"{") as (request, server, client):
        sender = drip(client, b" " * 99, 0.2, stop)
        started = time.monotonic()

        read_body_in_time(request)

        elapsed = time.monotonic() - started
        stop.set()
        sender.join()
        assert 1 <= elapsed < 1.5, elapsed
        assert request.META[BODY_UNREAD] == TIMED_OUT
        assert server.gettimeout() is None
        # gunicorn's reader of the body failed: it closes the connection after the answer
        assert request.META["wsgi.input"].failed is True


def test_a_connection_reset_while_the_body_is_read_is_said() -> None:
    with gunicorn_request(headers(100) + b"{") as (request, _, client):
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close: a reset
        threading.Timer(0.1, client.close).start()

        read_body_in_time(request)

        assert request.META[BODY_UNREAD] == FAILED


def test_a_body_cut_short_by_the_client_is_what_came() -> None:
    # As before: the client said it had sent it all; the parser says what is wrong with it
    with gunicorn_request(headers(100) + b"{") as (request, _, client):
        client.shutdown(socket.SHUT_WR)

        read_body_in_time(request)

        assert request.body == b"{"
        assert BODY_UNREAD not in request.META


def test_no_limit_leaves_the_body_to_whoever_reads_it(settings: Any) -> None:
    settings.WEB_BODY_READ_SECONDS = 0
    with gunicorn_request(headers(len(BODY)) + BODY) as (request, _, _):
        read_body_in_time(request)

        assert not request._read_started


def test_a_body_over_the_limit_is_not_read(settings: Any) -> None:
    settings.API_MAX_BODY_BYTES = 10
    with gunicorn_request(headers(len(BODY)) + BODY) as (request, _, _):
        read_body_in_time(request)

        assert not request._read_started


@pytest.mark.django_db
def test_the_admins_bodies_over_the_limit_are_refused_unread(settings: Any) -> None:
    # A multipart form Django would otherwise read as it comes, inside the turn (the CSRF check)
    settings.API_MAX_BODY_BYTES = 100

    response = HttpClient().post("/admin/login/", {"username": "a" * 200, "password": "pw"})

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


# --- Through gunicorn ---------------------------------------------------------------------------


def open_slow(api: Api, head: str, first: bytes = b"{") -> socket.socket:
    """A connection that sent `head` (a request's headers, Content-Length 1000) and `first`."""
    address = urlsplit(api.base_url)
    sock = socket.create_connection((address.hostname, address.port), timeout=30)
    sock.sendall(head.encode("latin-1") + first)
    return sock


def slow_submit(api: Api) -> socket.socket:
    return open_slow(
        api,
        "POST /api/jobs/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {api.key}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n",
    )


def slow_admin_login(api: Api) -> socket.socket:
    """No API key: the admin's login form, with the CSRF cookie its page gives anyone."""
    token = api.session.get(f"{api.base_url}/admin/login/", timeout=10).cookies["csrftoken"]
    return open_slow(
        api,
        "POST /admin/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Cookie: csrftoken={token}\r\nContent-Length: 1000\r\n\r\n",
        first=b"csrfmiddlewaretoken=",
    )


def read_answer(sock: socket.socket, timeout: float) -> tuple[http.client.HTTPResponse, bytes, float]:
    """The answer on `sock`, its body, and when it had come; then, that the server closed the
    connection (an end of file within `timeout`)."""
    sock.settimeout(timeout)
    answer = http.client.HTTPResponse(sock)
    answer.begin()
    body = answer.read()
    ended = time.monotonic()
    assert sock.recv(65536) == b""
    return answer, body, ended


def test_a_slow_body_does_not_delay_the_processs_other_requests(
    served: Api, make_api: Callable[..., Api]
) -> None:
    # Given: one process with one turn, and two clients that each declared a body of 1000 bytes
    # and sent one: one to the API, one (with no API key) to the admin's login
    job = served.submit("api.tasks.hello_world", {"message": "m"})
    other = make_api()
    other = Api(served.base_url, other.key, other.client)
    slow = [slow_submit(served), slow_admin_login(served)]
    try:
        time.sleep(0.5)

        # When: others ask meanwhile
        started = time.monotonic()
        health = other.session.get(f"{served.base_url}/healthz", timeout=3)
        listed = other.get("/api/jobs/", timeout=3)
        polled = served.get(f"/api/jobs/{job['id']}/", timeout=3)

        # Then: they are answered at once, long before the slow bodies' 10 s are over
        assert (health.status_code, listed.status_code, polled.status_code) == (200, 200, 200)
        assert time.monotonic() - started < 2
    finally:
        for sock in slow:
            sock.close()


@pytest.mark.parametrize("served_env", [{"WEB_BODY_READ_SECONDS": "1.5"}])
def test_a_body_not_all_arrived_in_time_gets_408_and_its_connection_closed(served: Api) -> None:
    # Given: a client sending its body a byte every 0.3 s, each in time for a socket timeout
    started = time.monotonic()  # before the request's first bytes: the server's 1.5 s run from them
    sock = slow_submit(served)
    stop = threading.Event()
    sender = drip(sock, b" " * 990, 0.3, stop)
    try:
        # When: the limit is over
        answer, body, ended = read_answer(sock, timeout=10)
    finally:
        stop.set()
        sender.join()
        sock.close()

    # Then: 408 in the service's error shape, and the connection closed (read_answer)
    assert answer.status == 408, body
    assert answer.getheader("Connection") == "close"  # gunicorn's: it keeps no connection alive here
    assert answer.getheader("X-Request-ID")
    assert json.loads(body)["error"] == {
        "code": "request_timeout", "message": "The request body did not arrive within 1.5 seconds.", "details": None,
    }
    assert 1.5 <= ended - started < 4, ended - started
    # and the process serves on
    assert served.submit("api.tasks.hello_world", {"message": "m"})["status"]


def test_a_body_sent_in_pieces_in_time_is_submitted(served: Api) -> None:
    body = b" " * 200_000 + BODY
    sock = open_slow(
        served,
        "POST /api/jobs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Authorization: Bearer {served.key}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n",
        first=body[:1000],
    )
    try:
        time.sleep(0.3)
        sock.sendall(body[1000:100_000])
        time.sleep(0.3)
        sock.sendall(body[100_000:])

        answer, answered, _ = read_answer(sock, timeout=10)
    finally:
        sock.close()

    assert answer.status == 202, answered
    assert json.loads(answered)["status"] == "PENDING"
