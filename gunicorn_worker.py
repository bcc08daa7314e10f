"""The API's gunicorn worker (gunicorn.conf.py's `worker_class`): gunicorn's threaded worker, whose
answer to a request it cannot parse carries the API's error shape, `{"error": {"code", "message",
"details"}}`, rather than gunicorn's HTML page, which a client generated from the spec cannot read.

gunicorn's master imports this module before Django is set up, so it imports gunicorn alone, never
`core` (core/__init__.py loads the Celery app). Its codes are therefore written here and listed in
core/error_codes.py as well; tests/core/test_error_codes.py checks that both agree."""
from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

# The status gunicorn answers a request it cannot parse with: the code and the message (formatted
# with gunicorn's settings) this worker answers it with. Each message is the same for every
# request of its kind: nothing of what the client sent is written back.
PARSE_ERRORS: dict[int, tuple[str, str]] = {
    400: ("bad_request", (
        "The request could not be parsed: a malformed request line, header or chunked body, or an "
        "HTTP version this service does not speak."
    )),
    414: ("request_line_too_long", (
        "The request line (the method, the path with its query string and the HTTP version) is "
        "longer than {limit_request_line} bytes."
    )),
    417: ("expectation_failed", "The `Expect` header asks for something other than `100-continue`."),
    431: ("request_headers_too_large", (
        "The request has more than {limit_request_fields} headers, or one longer than "
        "{limit_request_field_size} bytes."
    )),
    501: ("unsupported_transfer_coding", (
        "The `Transfer-Encoding` names a coding other than `chunked`, `gzip`, `deflate`, `compress` "
        "and `identity`."
    )),
}

# gunicorn's settings the messages name.
_LIMITS = ("limit_request_line", "limit_request_fields", "limit_request_field_size")


class _Page:
    """Stands in for the client's socket while gunicorn's own handle_error writes its HTML page:
    it keeps the page's bytes (status line first) instead of sending them. It has what gunicorn's
    util.write_error calls (gunicorn is pinned in requirements/); an upgrade that calls more
    leaves the page empty, the answer unsent, and tests/test_gunicorn_worker.py failing."""

    def __init__(self) -> None:
        self.written = b""

    def gettimeout(self) -> float:
        return 0.0  # non-blocking already: gunicorn's write_nonblock then calls sendall alone

    def setblocking(self, flag: bool) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        self.written += data


class JsonErrorThreadWorker(ThreadWorker):
    """gunicorn's ThreadWorker, its error answers of PARSE_ERRORS' statuses in the API's shape."""

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """gunicorn's handle_error does what it does for every error (chooses the status, writes
        its WARNING `Invalid request from ip=...` or its traceback, and the access log's line);
        only the page it writes is replaced, for the statuses PARSE_ERRORS has. Others (a 500, a
        403 of a proxy protocol or TLS setting this service does not use) keep gunicorn's page."""
        page = _Page()
        super().handle_error(req, page, addr, exc)
        if not page.written:
            return
        status_line = page.written.split(b"\r\n", 1)[0]  # b"HTTP/1.1 414 URI Too Long"
        status = int(status_line.split(b" ", 2)[1])
        answer = page.written
        if status in PARSE_ERRORS:
            code, message = PARSE_ERRORS[status]
            limits = {name: getattr(self.cfg, name) for name in _LIMITS}
            # The status's own reason phrase: gunicorn's is "Bad Request" for its 501 too.
            answer = json_error(status, HTTPStatus(status).phrase, code, message.format_map(limits))
        try:
            util.write_nonblock(client, answer)
        except OSError:  # the client is gone: as gunicorn does, nothing more to say
            self.log.debug("Failed to send error message.")


def json_error(status: int, reason: str, code: str, message: str) -> bytes:
    """An HTTP/1.1 answer that closes the connection, as gunicorn's own error page does."""
    body = json.dumps({"error": {"code": code, "message": message, "details": None}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body
