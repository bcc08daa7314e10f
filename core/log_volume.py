"""What keeps the log's volume bounded where a client, or anyone, can have the service write
lines at will, or where a failure repeats while it lasts: such lines counted, and let through
once an interval, saying how many (the metrics and the console say how much); and lines that
ask nothing of anyone left out. core/logs.py's configuration and gunicorn.conf.py apply the
filters; the services that write such warnings count them here.
"""
from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable
from typing import Any


class CountedPerKey:
    """What happens per key (a client), counted, and when to log it: at most once every
    `seconds` per key in this process, with how many happened since that key's previous line.
    For a WARNING a client can have the service write at will (a delivery given up, per job and
    event): one a client and interval says what the operator needs, the metrics and the console
    how much. Thread-safe (the deliveries worker's threads share it). `clock` is the time it
    reads (a test's own, to pass an interval at will rather than outrun one)."""

    def __init__(
        self, *, seconds: float = 60.0, forget_seconds: float = 3600.0, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._seconds = seconds
        # How long a key holds a count no line has told yet: the next line, if its key comes
        # again, tells it; a key never seen again (a made-up username, a job's event) is forgotten
        # then, its count with it, so that a client making up keys holds no memory for good.
        self._forget_seconds = max(forget_seconds, seconds)
        self._clock = clock
        self._lock = threading.Lock()
        # key: (when its last line was let through, what happened since)
        self._keys: dict[str, tuple[float, int]] = {}
        self._swept_at = clock()

    def due(self, key: str, *, count: int = 1) -> int:
        """Count `count` more for `key`; how many to log now (those and the ones held since its
        previous line), or 0 while its interval runs."""
        now = self._clock()
        with self._lock:
            passed_at, held = self._keys.get(key, (now - self._seconds, 0))
            if now - passed_at < self._seconds:
                self._keys[key] = (passed_at, held + count)
                return 0
            self._keys[key] = (now, 0)
            if now - self._swept_at >= self._seconds:
                # Keys whose interval ran out with nothing held: as if never seen; and those that
                # held a count since their last line longer than forget_seconds.
                self._swept_at = now
                self._keys = {k: v for k, v in self._keys.items()
                              if now - v[0] < (self._forget_seconds if v[1] else self._seconds)}
            return held + count

    def __len__(self) -> int:
        """How many keys this process holds."""
        return len(self._keys)


class Occasional:
    """A warning about a failure that repeats while it lasts (Redis unreachable from a loop that
    runs every second), logged at most once every `every` seconds."""

    def __init__(self, logger: logging.Logger, *, every: float = 60.0) -> None:
        self._logger = logger
        self._due = CountedPerKey(seconds=every)  # one key

    def warning(self, message: str, *args: Any, exc_info: BaseException | None = None) -> None:
        if self._due.due(""):
            self._logger.warning(message, *args, exc_info=exc_info)


class RevokedWithoutResultBackend(logging.Filter):
    """Drops Celery's WARNING that a revoked task could not be marked revoked in the result
    backend when there is none (CELERY_RESULT_BACKEND unset, the default): written by every
    worker for every cancel of a queued job, it asks nothing of anyone. With a backend
    configured, its failures still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Failed to mark task %s as revoked in backend"):
            return True
        return not (isinstance(record.args, tuple) and "No result backend" in str(record.args[-1]))


class CancelOnConnectionLossChosen(logging.Filter):
    """Drops Celery's CPendingDeprecationWarning, lines of text a worker wrote at each loss of its
    broker connection, that worker_cancel_long_running_tasks_on_connection_loss will be True by
    default in Celery 6: it is set, False, on purpose (core/settings/workers.py says why), and
    Celery 5 warns whenever it is False, set or not."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "worker_cancel_long_running_tasks_on_connection_loss" not in record.getMessage()


class OncePerInterval(logging.Filter):
    """Lets one record through every `seconds` (per process), without its traceback: for a line
    anyone can have written at will, which an operator needs to see once, not once a request.
    Django's ERROR for a request whose `Host` is not in ALLOWED_HOSTS is one: any request,
    without a key so without a rate limit, wrote it with a traceback of 14 lines (about 1.3 KB
    a request). Seen once a minute it still tells of a proxy or an ALLOWED_HOSTS set wrong
    (then every request is refused, and the metrics' 400s say how many)."""

    def __init__(self, seconds: float = 60.0) -> None:
        super().__init__()
        self._due = CountedPerKey(seconds=seconds)  # one key: thread-safe (gunicorn's threads)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._due.due(""):
            return False
        record.exc_info, record.exc_text = None, None
        return True



class InvalidRequests(OncePerInterval):
    """gunicorn's WARNING for each request it cannot parse, `Invalid request from ip=<address>:
    <what>` (a request line past 4 KB, a malformed header), at most one a minute per process
    (gunicorn.conf.py adds it to each API process's error log): anyone can send them, without a
    key, as fast as they like, each answered 400 (414, 431). Once a minute it still tells of a
    proxy or a client that sends nothing else."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Invalid request from ip=") or super().filter(record)


# The errors a timed-out write ends in: SO_SNDTIMEO's EAGAIN (BlockingIOError); TCP_USER_TIMEOUT's
# ETIMEDOUT (TimeoutError), or, where the network answered meanwhile that the client's host or
# network is unreachable (an ICMP error), that error: Linux ends the connection with its last
# soft error rather than ETIMEDOUT (tcp_write_err).
_WRITE_TIMED_OUT = frozenset({errno.EAGAIN, errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH})


class StreamWriteEnded(logging.Filter):
    """gunicorn's ERROR line and traceback for a connection whose write timed out, one WARNING
    line, at most one every `seconds` per process (gunicorn.conf.py adds it to each API process's
    error log), saying how many such connections were closed since the previous one: the write
    timeout (API_STREAM_WRITE_TIMEOUT_SECONDS, set on event streams' sockets as TCP_USER_TIMEOUT
    and SO_SNDTIMEO) ended a stream whose client read nothing, which is the client's doing, not a
    fault to page anyone for, and which a client can do at will: one line a stream, up to its
    share of streams (API_MAX_WAITERS_PER_CLIENT, 61 a process by default) every timeout, up to
    about 120 lines a minute per process. gunicorn is quiet only for EPIPE, ECONNRESET and
    ENOTCONN; these end as _WRITE_TIMED_OUT's."""

    def __init__(self, seconds: float = 60.0) -> None:
        super().__init__()
        self._due = CountedPerKey(seconds=seconds)  # one key: thread-safe (gunicorn's threads)

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not (record.msg == "Socket error processing request." and isinstance(error, OSError)
                and error.errno in _WRITE_TIMED_OUT):
            return True
        closed = self._due.due("")
        if not closed:
            return False
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg = ("Closed a connection whose client read nothing for the write timeout: %s "
                      "(%s so closed since this process's previous such line)")
        record.args = (error, closed)
        record.exc_info = record.exc_text = None
        return True
