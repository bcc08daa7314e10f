"""A request's body is read before the request takes its turn (core/concurrency.py), within
WEB_BODY_READ_SECONDS in all.

gunicorn's threaded worker reads a client's socket in blocking mode, with no timeout, and Django
reads a body only when something asks for it (the JSON parser, the admin's CSRF check reading its
form): inside the request's turn, if nothing read it earlier. A client that declared a body and
sent it slowly, or never, then held one of its process's WEB_ACTIVE_REQUESTS turns (1 by default)
for as long as it kept the connection open, and every other request of that process, /healthz
included, waited behind it. So ActiveRequestsMiddleware has the body read here first, on the
request's own thread, holding no turn. A body that has not all arrived within
WEB_BODY_READ_SECONDS is answered 408 (BodySizeLimitMiddleware does, inside a turn, so the answer
is timed, logged and carries its request id like any other), and gunicorn closes the connection,
since its reader of the body failed: a slow client costs its own connection's thread, never a
turn.

A socket timeout alone bounds each recv(), not the whole read: a client sending a byte every few
seconds would never meet it. So while the body is read, gunicorn's reader of the connection
reads through a stand-in for its socket that gives each recv() only what is left of the time.

On the hot path this adds no system call and no copy: a body that arrived with its headers
(gunicorn reads those 8 KiB at a time, so a small body usually has) is already in gunicorn's
buffer, and no recv() happens, nor any socket call to set a timeout. The body is read once, in
the one read the parser would have made: Django keeps the bytes (`request.body`), and the
parser's read of them returns that same bytes object. What it adds is Python's: a few
microseconds a request with a body.

Read here: a body declared by Content-Length, up to API_MAX_BODY_BYTES. A larger one is refused
413 without being read (BodySizeLimitMiddleware); without a Content-Length Django reads no body
(a chunked one is left to gunicorn, which discards it after the answer, on the thread). Under a
server other than gunicorn (the test suite's live server) nothing is read here.
"""
from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.http import HttpRequest, UnreadablePostError

# The request.META key set when the body could not be read here, to one of the two values below.
BODY_UNREAD = "core.body_unread"
TIMED_OUT = "timed_out"  # not all arrived within WEB_BODY_READ_SECONDS: 408
FAILED = "failed"  # the connection failed (the client reset it): 400


class _DeadlineSocket:
    """Stands in for the connection's socket in gunicorn's reader while the body is read: each
    recv() waits at most for what is left of the time, and none is called once it is over."""

    __slots__ = ("deadline", "previous_timeout", "sock", "timed_out", "timeout_set")

    def __init__(self, sock: Any, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.previous_timeout: float | None = None
        self.timeout_set = False
        self.timed_out = False

    def recv(self, size: int) -> bytes:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            self.timed_out = True
            raise TimeoutError("the request body did not arrive in time")
        if not self.timeout_set:
            self.previous_timeout = self.sock.gettimeout()
            self.timeout_set = True
        self.sock.settimeout(remaining)
        try:
            return self.sock.recv(size)
        except TimeoutError:
            self.timed_out = True
            raise


def _gunicorn_reader(meta: dict[str, Any]) -> Any | None:
    """The reader of this request's connection (gunicorn.http.unreader.SocketUnreader), found
    through the body's: `wsgi.input` is gunicorn's Body over a LengthReader over it. None when
    the request did not come through gunicorn's HTTP/1 worker, or gunicorn's objects changed
    (tests/core/test_request_body.py would fail then)."""
    sock = meta.get("gunicorn.socket")
    if sock is None:
        return None
    reader = getattr(getattr(meta.get("wsgi.input"), "reader", None), "unreader", None)
    return reader if getattr(reader, "sock", None) is sock else None


def read_body_in_time(request: HttpRequest) -> None:
    """Read the request's body now, within WEB_BODY_READ_SECONDS, and keep it as Django keeps a
    body it read (`request.body`, and a stream over it for whoever reads the request); when it
    cannot be, say why in request.META[BODY_UNREAD]."""
    seconds = settings.WEB_BODY_READ_SECONDS
    if seconds <= 0:
        return
    meta = request.META
    try:
        length = int(meta.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return  # BodySizeLimitMiddleware answers 400
    # API_MAX_BODY_BYTES is Django's DATA_UPLOAD_MAX_MEMORY_SIZE too (core/settings/api.py).
    if length <= 0 or length > settings.API_MAX_BODY_BYTES:
        return  # nothing to read, or refused unread (413)
    reader = _gunicorn_reader(meta)
    if reader is None:
        return
    sock = reader.sock
    stand_in = _DeadlineSocket(sock, time.monotonic() + seconds)
    reader.sock = stand_in
    try:
        request.body  # noqa: B018  read and kept by Django, for whoever reads the request next
    except UnreadablePostError:  # Django's OSError while reading the body
        meta[BODY_UNREAD] = TIMED_OUT if stand_in.timed_out else FAILED
        return
    finally:
        reader.sock = sock
        if stand_in.timeout_set:
            try:
                sock.settimeout(stand_in.previous_timeout)
            except OSError:
                pass  # closed: gunicorn's next use of it fails and ends the connection
