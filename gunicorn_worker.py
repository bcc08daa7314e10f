"""The API's gunicorn worker (gunicorn.conf.py's `worker_class`): gunicorn's threaded worker, whose
answer to a request it cannot parse, or to one that failed outside Django's handler (a 500),
carries the API's error shape, `{"error": {"code", "message", "details"}}`, rather than gunicorn's
HTML page, which a client generated from the spec cannot read; and every answer it writes carries
an `X-Request-ID`, which the log line gunicorn writes for it names.

gunicorn's master imports this module before Django is set up, so it imports gunicorn alone, never
`core` (core/__init__.py loads the Celery app). Its codes and its request ids are therefore made
here as core/error_codes.py and core/request_context.py make theirs; tests/core/test_error_codes.py
and tests/core/test_request_context.py check that both agree."""
from __future__ import annotations

import contextlib
import json
import logging
import threading
import uuid
from collections.abc import Iterator
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

# gunicorn's answer to a request that failed outside Django's handler (an error in a hook or in
# the WSGI layer, a request path outside SCRIPT_NAME): the API's own 500 (core/errors.py).
SERVER_ERROR = ("server_error", "Internal server error.")

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


def new_request_id() -> str:
    """A request id as core/request_context.py makes one for a request that sent none."""
    return uuid.uuid4().hex


# The id of the error this thread is answering, while gunicorn writes its log line for it.
_answering = threading.local()


@contextlib.contextmanager
def answering(request_id: str) -> Iterator[None]:
    """While it lasts, the lines this thread writes to gunicorn's error log end with
    ` request_id=<request_id>` (RequestIdNamed); none after, an exception's way out too."""
    _answering.request_id = request_id
    try:
        yield
    finally:
        _answering.request_id = None


class RequestIdNamed(logging.Filter):
    """Ends each line gunicorn writes while it answers an error (its WARNING `Invalid request
    from ip=...`, at most one a minute per process: core.log_volume.InvalidRequests; its ERROR
    and traceback for a 500) with ` request_id=<the answer's X-Request-ID>`: one line, as before."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = getattr(_answering, "request_id", None)
        if request_id:
            # Appended to the message unformatted: logging formats it with its arguments in the
            # handler, which reports a message its arguments do not fit ("--- Logging error ---")
            # where formatting it here raised out of gunicorn's call, its answer then unsent. The
            # id has no `%`; a message without arguments (gunicorn's WARNING, a `%` of the
            # client's in it) is written as it is.
            with contextlib.suppress(Exception):  # a message whose own __str__ raises: left as it is
                record.msg = f"{record.msg} request_id={request_id}"
        return True


class JsonErrorThreadWorker(ThreadWorker):
    """gunicorn's ThreadWorker, its error answers of PARSE_ERRORS' statuses and its 500 in the
    API's shape, each with an X-Request-ID."""

    def init_process(self) -> None:
        self.log.error_log.addFilter(RequestIdNamed())
        super().init_process()

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """gunicorn's handle_error does what it does for every error (chooses the status, writes
        its WARNING `Invalid request from ip=...` or its traceback, and the access log's line),
        its line naming the answer's request id; the page it writes is replaced for the statuses
        PARSE_ERRORS has and for its 500. Its 403 (a proxy protocol or TLS setting this service
        does not use: a proxy the operator did not allow) keeps gunicorn's page, with the id: no
        code of the list fits it (`permission_denied` is a staff user's), and no client of the
        API meets it."""
        request_id = new_request_id()
        page = _Page()
        with answering(request_id):
            super().handle_error(req, page, addr, exc)
        if not page.written:
            return
        status_line, rest = page.written.split(b"\r\n", 1)  # b"HTTP/1.1 414 URI Too Long"
        status = int(status_line.split(b" ", 2)[1])
        answer = status_line + f"\r\nX-Request-ID: {request_id}\r\n".encode() + rest
        if status in PARSE_ERRORS or status == 500:
            code, message = PARSE_ERRORS.get(status, SERVER_ERROR)
            limits = {name: getattr(self.cfg, name) for name in _LIMITS}
            # The status's own reason phrase: gunicorn's is "Bad Request" for its 501 too.
            answer = json_error(status, HTTPStatus(status).phrase, code, message.format_map(limits), request_id)
        try:
            util.write_nonblock(client, answer)
        except OSError:  # the client is gone: as gunicorn does, nothing more to say
            self.log.debug("Failed to send error message.")


def json_error(status: int, reason: str, code: str, message: str, request_id: str) -> bytes:
    """An HTTP/1.1 answer that closes the connection, as gunicorn's own error page does."""
    body = json.dumps({"error": {"code": code, "message": message, "details": None}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"X-Request-ID: {request_id}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body
