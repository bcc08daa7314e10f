"""The API's gunicorn worker (gunicorn.conf.py's `worker_class`): gunicorn's threaded worker, whose
answer to a request it cannot parse, or to one that failed outside Django's handler (a 500),
carries the API's error shape, `{"error": {"code", "message", "details"}}`, rather than gunicorn's
HTML page, which a client generated from the spec cannot read; and every answer it writes carries
an `X-Request-ID`, which the log line gunicorn writes for it names. The access log's line for an
answer names the answer's `X-Request-ID` as its `request_id`, as the application's lines of the
same request do, so an operator joins them.

Its loggers (gunicorn.conf.py's `logger_class`) write gunicorn's own lines, the master's and the
workers', in the format of the application's (LOG_FORMAT): under `json` one JSON object a line, as
core/logs.py writes the application's, where gunicorn's text lines were the ones on the stream a
log shipper could not parse. Under `text` each line is printable as the application's are
(core/logs.py's _text_renderer): a client's bytes it quotes (an access line's user agent or
referer) write no control character, no line break, to the operator's terminal or log.

gunicorn's master imports this module before Django is set up, so it imports gunicorn, structlog
and its own three modules alone (gunicorn_log_format.py, the lines' formats; gunicorn_headers.py,
the bound on a request's headers; gunicorn_connections.py, its base, closing a connection in its
thread), never `core` (core/__init__.py loads the Celery app). Its codes and
its request ids are therefore made here as core/error_codes.py and core/request_context.py make theirs;
tests/core/test_error_codes.py and tests/core/test_request_context.py check that both agree."""
from __future__ import annotations

import contextlib
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from http import HTTPStatus
from typing import Any

from gunicorn import glogging, util

from gunicorn_connections import ThreadClosingWorker
from gunicorn_headers import TimedOutLines, bound, log_held, log_timed_out, unbound
from gunicorn_log_format import PrintableAtoms, RequestIdEnded, json_formatter

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
        # gunicorn's access line for the page, held by RequestIdLogger.access until the answer
        # sent in its place is made: written with the size of that answer's body.
        self.access: Callable[[int], None] | None = None

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
    """While it lasts, the lines this thread writes to gunicorn's error log name `request_id`
    (RequestIdNamed); after, the id they named before (the application's answer's, around its
    access line: JsonErrorThreadWorker.handle_request), an exception's way out too."""
    before = getattr(_answering, "request_id", None)
    _answering.request_id = request_id
    try:
        yield
    finally:
        _answering.request_id = before


class RequestIdNamed(logging.Filter):
    """Gives each line gunicorn writes while it answers an error (its WARNING `Invalid request
    from ip=...`, at most one a minute per process: core.log_volume.InvalidRequests; its ERROR
    and traceback for a 500), each line it writes about an answer of the application's once its
    headers are given (its ERROR `Error handling request` for a body that failed after they went
    out: a stream's), and each access line (RequestIdLogger.access) the answer's X-Request-ID as
    its `request_id`, which each format writes its way (RequestIdEnded, json_formatter)."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = getattr(_answering, "request_id", None)
        if request_id:
            record.request_id = request_id
        return True


class RequestIdLogger(glogging.Logger):
    """gunicorn's logger, whose access line names the X-Request-ID its answer carried as its
    `request_id`. For an answer of the application's, that is the id core/request_context.py
    gave the request (the client's when well-formed, else a new one), which the application's
    lines of the request name too: never a value the client sent that it refused. An answer of
    JsonErrorThreadWorker.handle_error's gets its id after gunicorn made its access line, which
    `answering` names then, and the line its size once that answer is made. A line about an
    answer without an id has no `request_id`, as the application's lines outside a request have
    none."""

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if not self.access_log_enabled:  # WEB_ACCESS_LOG unset: no header to look for
            return
        if isinstance(resp.sock, _Page):
            # gunicorn's line for its error page said 0 bytes (it counts none written to the
            # page): JsonErrorThreadWorker.handle_error writes it with its answer's body's size.
            resp.sock.access = partial(self._sized, resp, req, environ, request_time)
            return
        request_id = _request_id(resp.headers)
        if request_id is None:
            super().access(resp, req, environ, request_time)
            return
        with answering(request_id):
            super().access(resp, req, environ, request_time)

    def _sized(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any, size: int) -> None:
        resp.sent = size
        super().access(resp, req, environ, request_time)


class TextLogger(RequestIdLogger):
    """gunicorn's logger for LOG_FORMAT=text: its own format, a line about an answer (its access
    line too) ending with its request id (RequestIdEnded), its access line's values printable."""

    atoms_wrapper_class = PrintableAtoms

    def setup(self, cfg: Any) -> None:
        # gunicorn makes its handlers here, anew on a reload (SIGHUP); the service sets no syslog.
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(RequestIdEnded(self.error_fmt, self.datefmt))
        for handler in self.access_log.handlers:
            handler.setFormatter(RequestIdEnded(self.access_fmt))


class JsonLogger(RequestIdLogger):
    """gunicorn's logger for LOG_FORMAT=json: each line of its error log (its start, a worker
    timed out or killed, a request it cannot parse, its 500) and of its access log
    (WEB_ACCESS_LOG, its line the `message`) one JSON object (json_formatter)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in [*self.error_log.handlers, *self.access_log.handlers]:
            handler.setFormatter(json_formatter())


class JsonErrorThreadWorker(ThreadClosingWorker):
    """gunicorn's ThreadWorker, its error answers of PARSE_ERRORS' statuses and its 500 in the
    API's shape, each with an X-Request-ID, and a connection closed in the thread that answered
    on it, never on the main loop (gunicorn_connections.py)."""

    def init_process(self) -> None:
        self.log.error_log.addFilter(RequestIdNamed())
        self.log.access_log.addFilter(RequestIdNamed())
        self.header_read_seconds = 0.0  # WEB_HEADER_READ_SECONDS once the application is loaded
        self.header_timeouts = TimedOutLines()
        super().init_process()

    def run(self) -> None:
        """gunicorn's, then the WARNING for connections closed since its previous line, if any."""
        try:
            super().run()
        finally:
            log_held(self.log, self.header_timeouts, self.header_read_seconds, final=True)

    def notify(self) -> None:
        """gunicorn's (its main loop's, each second, telling the master this process lives), and
        the WARNING for connections closed since its previous line, once a minute has passed: a
        flood that stops is said whole, not only its first connection."""
        super().notify()
        log_held(self.log, self.header_timeouts, self.header_read_seconds)

    def load_wsgi(self) -> None:
        # gunicorn loads the application here, anew on a reload (SIGHUP).
        super().load_wsgi()
        self.wsgi = _answer_named(self.wsgi)
        from django.conf import settings  # set up by the application just loaded

        self.header_read_seconds = settings.WEB_HEADER_READ_SECONDS

    def handle(self, conn: Any) -> Any:
        """gunicorn's, each request's line and headers read within WEB_HEADER_READ_SECONDS
        (gunicorn_headers.py), else the connection closed unanswered."""
        if self.header_read_seconds > 0:
            if conn.parser is None:  # a new connection: gunicorn makes its parser once data came
                conn.init = partial(_init_bounded, conn, self.header_read_seconds)
            else:
                conn.header_read = bound(conn.parser, self.header_read_seconds)
        try:
            return super().handle(conn)
        finally:
            unbound(conn.parser)
            stand_in = conn.__dict__.pop("header_read", None)
            if stand_in is not None and stand_in.timed_out:
                log_timed_out(self.log, self.header_timeouts, self.header_read_seconds, conn.client)

    def handle_request(self, req: Any, conn: Any) -> bool:
        """gunicorn's, its lines about the answer naming its X-Request-ID from when the
        application gives its headers (_answer_named) to the request's end: gunicorn's ERROR
        `Error handling request` and traceback for a body that raised after its headers went
        out (an event stream's read failing) is written outside its access line, and named no
        request. HTTP/2 (gunicorn's http_protocols, `h1` alone here) answers elsewhere."""
        unbound(conn.parser)  # the headers are read: the body and the answer use the socket itself
        try:
            return super().handle_request(req, conn)
        finally:
            _answering.request_id = None

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """gunicorn's handle_error does what it does for every error (chooses the status, writes
        its WARNING `Invalid request from ip=...` or its traceback, and the access log's line,
        held until the answer is made, to name its body's size), its lines naming the answer's
        request id; the page it writes is replaced for the statuses PARSE_ERRORS has and for its
        500. Its 403 (a proxy protocol or TLS setting this service does not use: a proxy the
        operator did not allow) keeps gunicorn's page, with the id: no code of the list fits it
        (`permission_denied` is a staff user's), and no client of the API meets it."""
        request_id = new_request_id()
        page = _Page()
        with answering(request_id):
            super().handle_error(req, page, addr, exc)
            answer = self._answer(page, request_id)
            if page.access is not None:
                # Written before the answer is sent, as gunicorn wrote it: a client that has its
                # answer finds its line in the log.
                page.access(len(answer.partition(b"\r\n\r\n")[2]))
        if not answer:
            return
        try:
            util.write_nonblock(client, answer)
        except OSError:  # the client is gone: as gunicorn does, nothing more to say
            self.log.debug("Failed to send error message.")

    def _answer(self, page: _Page, request_id: str) -> bytes:
        """The answer sent in the place of gunicorn's `page` (none when it wrote none)."""
        if not page.written:
            return b""
        status_line, rest = page.written.split(b"\r\n", 1)  # b"HTTP/1.1 414 URI Too Long"
        status = int(status_line.split(b" ", 2)[1])
        if status in PARSE_ERRORS or status == 500:
            code, message = PARSE_ERRORS.get(status, SERVER_ERROR)
            limits = {name: getattr(self.cfg, name) for name in _LIMITS}
            # The status's own reason phrase: gunicorn's is "Bad Request" for its 501 too.
            return json_error(status, HTTPStatus(status).phrase, code, message.format_map(limits), request_id)
        return status_line + f"\r\nX-Request-ID: {request_id}\r\n".encode() + rest


def _init_bounded(conn: Any, seconds: float) -> None:
    """gunicorn's TConn.init (its parser made), then its parser's reads bounded (gunicorn_headers).
    gunicorn's handle makes a new connection's parser and reads its first request in one call, no
    hook between: this connection's own init stands in for that once (gunicorn is pinned in
    requirements/; an upgrade that makes the parser elsewhere leaves the first request unbounded
    and tests/test_gunicorn_headers.py failing)."""
    del conn.init  # gunicorn's own from now on
    conn.init()
    conn.header_read = bound(conn.parser, seconds)


def _request_id(headers: list[tuple[str, str]]) -> str | None:
    """The X-Request-ID among an answer's `headers` (gunicorn's or the application's), if any."""
    return next((value for name, value in headers if name.lower() == "x-request-id"), None)


def _answer_named(application: Any) -> Any:
    """The WSGI `application`, the X-Request-ID of each answer it starts named by the lines this
    thread writes to gunicorn's error log from then on (RequestIdNamed), until
    JsonErrorThreadWorker.handle_request ends."""

    def named(environ: dict[str, Any], start_response: Any) -> Any:
        def started(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            _answering.request_id = _request_id(headers)
            return start_response(status, headers, exc_info)

        return application(environ, started)

    return named


def json_error(status: int, reason: str, code: str, message: str, request_id: str) -> bytes:
    """An HTTP/1.1 answer that closes the connection, as gunicorn's own error page does."""
    body = json.dumps({"error": {"code": code, "message": message, "details": None}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"X-Request-ID: {request_id}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body
