"""A request gunicorn cannot parse (a request line past its limit, too many or too long headers, a
malformed request line, an unknown HTTP version) is answered in the API's error shape, with a code
of the list (core/error_codes.py) and gunicorn's status, by the API's worker (gunicorn_worker.py).
Before, it was gunicorn's HTML page, which a client generated from the spec could not parse.
Sent as raw bytes to gunicorn as production runs it."""
from __future__ import annotations

import http
import http.client
import json
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from core.error_codes import ERROR_CODES
from tests.conftest import Api, serving

# Written into each request: no answer may echo it.
MARKER = b"<script>alert('sent')</script>"

UNPARSABLE = [
    ("a 10 KB request line", b"GET /api/jobs/?q=" + b"a" * 10_000 + MARKER + b" HTTP/1.1\r\nHost: localhost\r\n\r\n",
     "request_line_too_long"),
    ("a 10 KB header", b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 10_000 + MARKER + b"\r\n\r\n",
     "request_headers_too_large"),
    ("200 headers", b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n"
     + b"".join(b"X-Header-%d: %s\r\n" % (i, MARKER) for i in range(200)) + b"\r\n", "request_headers_too_large"),
    ("a garbage request line", MARKER + b"\r\n\r\n", "bad_request"),
    ("a header without a colon", b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + MARKER + b"\r\n\r\n",
     "bad_request"),
    ("HTTP/9.9", b"GET /healthz?" + MARKER + b" HTTP/9.9\r\nHost: localhost\r\n\r\n", "bad_request"),
    ("an Expect other than 100-continue", b"POST /api/jobs/ HTTP/1.1\r\nHost: localhost\r\nExpect: " + MARKER
     + b"\r\nContent-Length: 2\r\n\r\n{}", "expectation_failed"),
    ("a Transfer-Encoding of br", b"POST /api/jobs/ HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: br\r\n\r\n",
     "unsupported_transfer_coding"),
]


def send_raw(api: Api, sent: bytes) -> tuple[http.client.HTTPResponse, bytes]:
    """The server's answer to the bytes `sent` on a new connection, and its body."""
    address = urlsplit(api.base_url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(sent)
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        return answer, answer.read()


@pytest.mark.parametrize(("sent", "code"), [(sent, code) for _, sent, code in UNPARSABLE],
                         ids=[kind for kind, _, _ in UNPARSABLE])
def test_a_request_the_server_cannot_parse_is_answered_in_the_error_shape(
    make_api: Callable[..., Api], tmp_path: Path, sent: bytes, code: str
) -> None:
    # Given the API as production runs it
    log_path = tmp_path / "gunicorn.log"
    with serving(make_api(), log_path) as (api, _):
        # When a client sends a request gunicorn cannot parse, then another one a moment later
        answer, body = send_raw(api, sent)
        again, _ = send_raw(api, sent)
        # And a probe asks /healthz on a new connection
        healthy = requests.get(api.base_url + "/healthz", timeout=10)

    # Then the answer is the API's error shape, with the kind's code and its listed status, and
    # gunicorn closes the connection as it did
    assert answer.status == ERROR_CODES[code].status, (answer.status, body)
    # With the status's own reason phrase (gunicorn writes "501 Bad Request")
    assert answer.reason == http.HTTPStatus(answer.status).phrase
    assert answer.getheader("Content-Type") == "application/json", body
    assert answer.getheader("Connection") == "close"
    parsed = json.loads(body)
    assert list(parsed) == ["error"] and set(parsed["error"]) == {"code", "message", "details"}, parsed
    assert parsed["error"]["code"] == code and parsed["error"]["details"] is None, parsed
    # And nothing of what the client sent comes back
    assert b"script" not in body and b"sent" not in body, body
    # And the server goes on serving: the next request alike, and /healthz
    assert again.status == answer.status
    assert healthy.status_code == 200
    # And gunicorn's own WARNING is still written, once a minute per process
    # (core.log_volume.InvalidRequests): one line for the two
    said = [line for line in log_path.read_text().splitlines() if "Invalid request from ip=" in line]
    assert len(said) == 1, said
