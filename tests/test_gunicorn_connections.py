"""A client that keeps its connection open after its answer holds up no other client
(gunicorn_connections.py): gunicorn's wait for it to hang up, 2 s at most, runs in the thread
that answered it. Before, it ran on the process's main loop, which took no other connection
meanwhile: 8 such clients held every other client's request up for seconds, 230 got the process
killed. The answer such a client gets is still whole, its connection ended by the server's FIN
(RFC 9112 section 9.6), not a reset. Against gunicorn as production runs it; and a connection
closed in its thread is counted gone once, where gunicorn counted it twice."""
from __future__ import annotations

import http.client
import json
import select
import socket
import time
import types
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from urllib.parse import urlsplit

import requests
from gunicorn.workers.gthread import TConn

from gunicorn_connections import ThreadClosingWorker
from tests.conftest import Api, serving

# Clients that ask /healthz and never hang up; each one held the main loop 2 s.
UNCLOSED = 8


def test_clients_that_never_hang_up_hold_up_no_other_client(make_api: Callable[..., Api], tmp_path: Path) -> None:
    # Given the API as production runs it
    with serving(make_api(), tmp_path / "gunicorn.log") as (api, _):
        address = urlsplit(api.base_url)
        # And clients that each ask /healthz and then keep their connection open, their answers
        # sent (so their connections' close is due)
        held = [socket.create_connection((address.hostname, address.port), timeout=10) for _ in range(UNCLOSED)]
        for sock in held:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        for sock in held:
            assert select.select([sock], [], [], 10)[0], "no answer came"

        # When another client asks for its jobs, three times
        took = []
        for _ in range(3):
            started = time.monotonic()
            assert api.get("/api/jobs/", timeout=60).status_code == 200
            took.append(time.monotonic() - started)

        # Then each answer comes at once (before, 2 s a held connection: up to 16 s)
        assert max(took) < 1.0, took
        # And each held client got its whole answer, then the server's FIN, no reset
        for sock in held:
            answer = http.client.HTTPResponse(sock)
            answer.begin()
            assert answer.status == 200 and answer.getheader("Connection") == "close"
            assert json.loads(answer.read()) == {"status": "ok"}
            assert sock.recv(1) == b""
            sock.close()
        # And the process still serves: none was killed
        assert requests.get(api.base_url + "/healthz", timeout=10).status_code == 200


def test_an_answer_is_whole_when_its_request_left_bytes_unread(make_api: Callable[..., Api], tmp_path: Path) -> None:
    # Given the API as production runs it
    with serving(make_api(), tmp_path / "gunicorn.log") as (api, _):
        address = urlsplit(api.base_url)
        with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
            # When a client asks for the schema (about 480 KB), sends more the server never reads
            # (another request, past its connection's one: keep-alive is off), and reads the answer
            # slowly, so that much of it is still unsent when the server closes the connection
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(b"GET /api/schema/ HTTP/1.1\r\nHost: localhost\r\n\r\n"
                         + b"POST /api/jobs/ HTTP/1.1\r\nHost: localhost\r\nContent-Length: 32768\r\n\r\n"
                         + b"x" * 32768)
            time.sleep(1)
            answer = http.client.HTTPResponse(sock)
            answer.begin()
            schema = answer.read()

    # Then the answer is whole (a close that left those bytes unread sends a reset, which cuts it off)
    assert answer.status == 200, schema[:200]
    assert len(schema) == int(answer.getheader("Content-Length")) > 100_000


def test_a_connection_closed_in_its_thread_is_counted_gone_once() -> None:
    # Given a process holding one connection, which its thread closed already (gunicorn's own
    # close after a stream failed past its headers, or ours: ThreadClosingWorker.handle)
    ours, theirs = socket.socketpair()
    conn = TConn(types.SimpleNamespace(keepalive=2), ours, ("127.0.0.1", 1), ("127.0.0.1", 2))
    ours.close()
    ended: Future[bool] = Future()
    ended.set_result(False)
    worker = types.SimpleNamespace(nr_conns=1, alive=True)

    # When the main loop hears that its request ended
    ThreadClosingWorker.finish_request(worker, conn, ended)  # type: ignore[arg-type]

    # Then the process holds no connection; gunicorn's own count went to -1 (it failed closing
    # the closed socket and counted it gone twice), so the process took one more than
    # WEB_MAX_CONNECTIONS from then on
    assert worker.nr_conns == 0
    theirs.close()
