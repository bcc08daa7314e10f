"""A request's line and headers must all arrive within WEB_HEADER_READ_SECONDS (10 s by default) of
their first bytes, on a new connection and on a kept-alive one alike; past it, the connection is
closed without an answer (as nginx's client_header_timeout does: the client is gone or stalled),
and a WARNING says so, one line a minute per API process at most, each counting every connection
closed since the previous one (TimedOutLines).

gunicorn's threaded worker reads them from a blocking socket with no timeout, once it has waited
5 s for a first byte: a client that sent `GET / HTTP/1.1\\r\\nX-A: ` and then nothing held one of
its process's threads for as long as it kept the connection open, and WEB_THREADS such clients
stopped the process answering anyone, /healthz included. A socket timeout alone bounds each
recv(), not the whole read (a client sending a byte every few seconds never meets it), so while
they are read, gunicorn's reader of the connection reads through a stand-in for its socket that
gives each recv() only what is left of the time, as core/request_body.py does for the body. A
request whose bytes are there when gunicorn reads them (nearly all) costs no system call more.

gunicorn's master imports this module (gunicorn_worker.py does): it imports nothing of `core`. The
seconds are Django's setting, checked where the settings are read (core/settings/api.py), which
gunicorn_worker.py hands to this module once its process has loaded the application."""
from __future__ import annotations

import socket
import threading
import time
from typing import Any

# At most one WARNING this often, per process: a flood of stalled clients is one line a minute.
LOG_INTERVAL_SECONDS = 60.0


class HeaderDeadline:
    """Stands in for a connection's socket in gunicorn's reader while a request's line and
    headers are read: the time runs from its first recv() (gunicorn's reader calls it once the
    first bytes are there), each recv() waits at most for what is left of it, and once it is over
    recv() shuts the connection and answers b"", as a closed connection would: gunicorn ends the
    request unanswered (NoMoreData, which it logs at DEBUG) and closes the connection."""

    __slots__ = ("deadline", "seconds", "sock", "timed_out", "timeout_set")

    def __init__(self, sock: Any, seconds: float) -> None:
        self.sock = sock
        self.seconds = seconds
        self.deadline: float | None = None
        self.timeout_set = False
        self.timed_out = False

    def recv(self, size: int) -> bytes:
        now = time.monotonic()
        if self.deadline is None:
            self.deadline = now + self.seconds
        remaining = self.deadline - now
        # Checked before bytes already there are read too: a client dripping its headers so
        # that each read finds some would otherwise never meet the limit.
        if remaining <= 0:
            return self._timed_out()
        if not self.timeout_set:
            # Bytes that arrived already (a whole request, usually) are read in the one recv()
            # gunicorn would have made: no timeout set, no system call more on the hot path.
            try:
                return self.sock.recv(size, socket.MSG_DONTWAIT)
            except (BlockingIOError, ValueError):  # none yet; ValueError: a TLS socket takes no flags
                pass
        self.sock.settimeout(remaining)
        self.timeout_set = True
        try:
            return self.sock.recv(size)
        except TimeoutError:
            return self._timed_out()

    def _timed_out(self) -> bytes:
        self.timed_out = True
        # Both ways shut now: gunicorn's close of the connection (on its main thread) otherwise
        # lingers up to 2 s reading what the client still sends, a stalled client's 2 s each.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # the client is gone already
        return b""

    def restore(self) -> None:
        """The socket blocking again, as gunicorn left it, for the body and the answer."""
        if self.timeout_set:
            try:
                self.sock.settimeout(None)
            except OSError:
                pass  # closed: gunicorn's next use of it fails and ends the connection


def bound(parser: Any, seconds: float) -> HeaderDeadline | None:
    """gunicorn's HTTP/1 `parser` of a connection reads its next request's line and headers
    within `seconds` (its reader's socket a HeaderDeadline until `unbound`). None when it has no
    socket reader (HTTP/2 or a changed gunicorn: tests/test_gunicorn_headers.py would fail)."""
    reader = getattr(parser, "unreader", None)
    sock = getattr(reader, "sock", None)
    if sock is None or isinstance(sock, HeaderDeadline):
        return None
    stand_in = HeaderDeadline(sock, seconds)
    reader.sock = stand_in
    return stand_in


def unbound(parser: Any) -> HeaderDeadline | None:
    """The connection's own socket back in `parser`'s reader (the headers are read, or their
    read failed), blocking as gunicorn left it; the stand-in it replaces, if any."""
    reader = getattr(parser, "unreader", None)
    stand_in = getattr(reader, "sock", None)
    if not isinstance(stand_in, HeaderDeadline):
        return None
    reader.sock = stand_in.sock
    stand_in.restore()
    return stand_in


class TimedOutLines:
    """When to log the connections whose headers did not arrive in time, so that the lines' counts
    add up to every one closed: the first at once, then at most one line every
    LOG_INTERVAL_SECONDS with how many were closed since the previous line (and the last one's
    client). The worker's main loop asks each second (`due`), so a flood that stops is said too,
    a minute after the previous line at most, and once more as the process stops. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._logged_at: float | None = None
        self._held = 0
        self._peer: Any = None

    def closed(self, peer: Any) -> tuple[int, Any]:
        """Count one more, from `peer`; how many to log now (0 while the interval runs), and the
        last one's peer."""
        with self._lock:
            self._held += 1
            self._peer = peer
            return self._take(final=False)

    def due(self, *, final: bool = False) -> tuple[int, Any]:
        """How many closed to log now, held since the previous line (0 while the interval runs,
        unless `final`), and the last one's peer."""
        if not self._held:  # read without the lock: one that lands meanwhile is said next time
            return 0, None
        with self._lock:
            return self._take(final=final)

    def _take(self, *, final: bool) -> tuple[int, Any]:
        now = time.monotonic()
        if not self._held or (
            not final and self._logged_at is not None and now - self._logged_at < LOG_INTERVAL_SECONDS
        ):
            return 0, None
        count, peer = self._held, self._peer
        self._logged_at, self._held, self._peer = now, 0, None
        return count, peer


def log_timed_out(log: Any, lines: TimedOutLines, seconds: float, client: Any) -> None:
    """The connection from `client` was closed, its request's line and headers not all arrived in
    time: the WARNING for it and those held before it, when one is due."""
    _warn(log, *lines.closed(client[0] if isinstance(client, tuple) and client else client), seconds)


def log_held(log: Any, lines: TimedOutLines, seconds: float, *, final: bool = False) -> None:
    """The WARNING for the connections closed since the previous line, when one is due (`final`: the
    process stops, now)."""
    _warn(log, *lines.due(final=final), seconds)


def _warn(log: Any, count: int, peer: Any, seconds: float) -> None:
    if not count:
        return
    log.warning(
        "Closed %d connection(s) whose request line and headers did not all arrive within %g s "
        "(WEB_HEADER_READ_SECONDS; at most one line a minute, counting those since the previous), the last "
        "from ip=%s: clients stalled or too slow, or a proxy not buffering them", count, seconds, peer,
    )
