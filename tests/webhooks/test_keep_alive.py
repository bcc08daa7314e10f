"""The outbound client keeps connections alive, but only to the address it checked for the
request at hand, and never hands a request to a connection the receiver has closed."""
from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core import http, http_sessions
from examples.receiver import Receiver, Reply

LOOPBACK_ONLY = [ipaddress.ip_network("127.0.0.0/8")]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.peers.append(self.client_address)
        close = self.server.close_after_each
        self.wfile.write(
            b"HTTP/1.1 204 No Content\r\n"
            + (b"Connection: close\r\n" if close else b"")
            + b"\r\n"
        )
        self.close_connection = close

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: str, port: int = 0, *, close_after_each: bool = False) -> None:
        super().__init__((address, port), _Handler)
        self.peers: list[tuple[str, int]] = []
        self.close_after_each = close_after_each
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.fixture
def serve() -> Iterator[Callable[..., _Server]]:
    servers: list[_Server] = []

    def start(address: str = "127.0.0.1", port: int = 0, **options: bool) -> _Server:
        servers.append(_Server(address, port, **options))
        return servers[-1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def post(url: str, resolves_to: str = "127.0.0.1") -> http.HttpResult:
    return http.post(
        url,
        body=b"{}",
        headers={},
        timeout_seconds=3,
        resolver=lambda host, port: [resolves_to],
        allowed=LOOPBACK_ONLY,
    )


def test_requests_to_one_receiver_share_a_connection(serve: Callable[..., _Server]) -> None:
    server = serve()
    url = f"http://hooks.example:{server.server_address[1]}/in"

    results = [post(url) for _ in range(3)]

    assert [r.status_code for r in results] == [204, 204, 204]
    assert len(set(server.peers)) == 1  # one client port: one TCP connection


def test_a_connection_the_receiver_closed_is_not_reused(serve: Callable[..., _Server]) -> None:
    server = serve(close_after_each=True)
    url = f"http://hooks.example:{server.server_address[1]}/in"

    results = [post(url) for _ in range(3)]

    assert [r.status_code for r in results] == [204, 204, 204]
    assert len(set(server.peers)) == 3


def test_a_name_that_now_resolves_elsewhere_gets_a_connection_to_the_new_address(
    serve: Callable[..., _Server],
) -> None:
    # Given two receivers on one port, at two loopback addresses
    first = serve("127.0.0.1")
    port = first.server_address[1]
    second = serve("127.0.0.2", port)
    url = f"http://hooks.example:{port}/in"

    # When the name resolves to the first, then (DNS changed) to the second
    assert post(url, resolves_to="127.0.0.1").status_code == 204
    assert post(url, resolves_to="127.0.0.2").status_code == 204

    # Then the second request went to the address checked for it, not down the open connection
    assert len(first.peers) == 1 and len(second.peers) == 1


def test_an_idle_connection_is_dropped_before_receivers_usually_drop_it(
    serve: Callable[..., _Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve()
    url = f"http://hooks.example:{server.server_address[1]}/in"
    monkeypatch.setattr(http_sessions.SessionCache, "IDLE_SECONDS", 0.0)

    post(url)
    post(url)

    assert len(set(server.peers)) == 2


def test_a_cookie_a_receiver_sets_is_never_sent_on(make_receiver: Callable[..., Receiver]) -> None:
    # Given one client's receiver on a host that sets a cookie (a session, a load balancer's)
    receiver = make_receiver(Reply(headers={"Set-Cookie": "session=first-clients-secret; Path=/"}))
    port = receiver.url.rsplit(":", 1)[1].strip("/")

    # When another client's delivery goes to the same host (the kept-alive session is shared)
    first = post(f"http://shared-hooks.example:{port}/first-client")
    second = post(f"http://shared-hooks.example:{port}/other-client")

    # Then neither request carries a cookie: the other client's receiver never sees the first's
    assert (first.status_code, second.status_code) == (200, 200)
    assert [received.headers.get("cookie") for received in receiver.wait_for(2)] == [None, None]


def test_a_connection_outlives_the_thread_that_opened_it(serve: Callable[..., _Server]) -> None:
    # Batches are sent on threads of their own, which end with the batch
    server = serve()
    url = f"http://hooks.example:{server.server_address[1]}/in"

    for _ in range(3):
        sender = threading.Thread(target=post, args=(url,))
        sender.start()
        sender.join()

    assert len(server.peers) == 3 and len(set(server.peers)) == 1


def test_requests_at_once_to_one_receiver_each_get_a_connection(serve: Callable[..., _Server]) -> None:
    # A session is lent to one request at a time: two at once never share one connection
    cache = http_sessions.SessionCache()
    target = http_sessions.Target(url="", scheme="http", host="hooks.example", port=1, address="127.0.0.1")

    first, second = cache.get(target, None), cache.get(target, None)
    cache.done(target, None, first, keep=True)
    cache.done(target, None, second, keep=True)

    assert first is not second
    assert {cache.get(target, None), cache.get(target, None)} == {first, second}
