"""When a kept database connection is checked before it is used again: after a pause, not before
every request and task.

Django's CONN_HEALTH_CHECKS runs a `SELECT 1` round trip before the first query of every request
and task on a kept connection. Under load that is one round trip in two of a poll, a tenth of its
CPU (docs/benchmarks.md). So the settings turn it off, and the request and task signals (and the
API's request turns, core/concurrency.py) call these instead: Django's own end-of-use policy
(`close_if_unusable_or_obsolete`: closed when older than CONN_MAX_AGE, or after an error it did
not survive), and the same health check, but only on a connection idle for at least
HEALTH_CHECK_AFTER_IDLE_SECONDS, and within DB_CHECK_TIMEOUT_SECONDS (as /readyz's check).

The cost: a connection that breaks less than that after its last use fails its next query. A
PostgreSQL restart can be that quick (0.5 s in fault test 4), so each connection in use just
before one may fail one request (answered 503 database_unavailable, core/errors.py) or task
(which retries its `DatabaseError`); the connection is closed after the failure and the next use
opens a new one. Queries during the restart itself fail either way.
"""
from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

HEALTH_CHECK_AFTER_IDLE_SECONDS = 1.0

# Connection wrapper -> when its last request or task ended (time.monotonic()).
_released_at: weakref.WeakKeyDictionary[BaseDatabaseWrapper, float] = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def hung_up_after(wrapper: BaseDatabaseWrapper, seconds: float) -> Iterator[None]:
    """Shuts `wrapper`'s open PostgreSQL connection's socket if the block still runs `seconds`
    later: its query then fails at once, and the connection is closed (TimeoutError if it answered
    all the same). A statement timeout would not do: the server applies it, and one that never
    sees the query (a stalled network, a frozen server, a pooler queueing it) never does, while
    libpq waits on the socket for ever."""
    if wrapper.vendor != "postgresql" or wrapper.connection is None:
        yield  # SQLite (embedded mode) is a file: its own busy timeout bounds a wait
        return
    # A second descriptor of the connection's socket: shutting it down ends the connection, and
    # closing it leaves the driver's descriptor alone.
    raw = socket.socket(fileno=os.dup(wrapper.connection.fileno()))
    hung_up = threading.Event()

    def hang_up() -> None:
        hung_up.set()
        with contextlib.suppress(OSError):  # already closed by the server
            raw.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(seconds, hang_up)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        timer.join()  # a hang-up under way ends before its descriptor closes
        raw.close()
        if hung_up.is_set():
            wrapper.close()
    if hung_up.is_set():  # the answer came as it was cut off: too late, and the connection is gone
        raise TimeoutError(f"PostgreSQL did not answer within {seconds} s")


def _answers(wrapper: BaseDatabaseWrapper) -> bool:
    """Django's health check of `wrapper` (`SELECT 1`), within DB_CHECK_TIMEOUT_SECONDS."""
    try:
        with hung_up_after(wrapper, settings.DB_CHECK_TIMEOUT_SECONDS):
            return wrapper.is_usable()
    except TimeoutError:
        return False


def connection_reused(wrapper: BaseDatabaseWrapper) -> None:
    """Before a request or task uses `wrapper`: close it if it is too old or broken, checking it
    (`SELECT 1`) only if it was idle for HEALTH_CHECK_AFTER_IDLE_SECONDS; the next query opens a
    new one."""
    if wrapper.in_atomic_block:
        return  # a transaction's owner finishes it (only the test suite serves requests in one)
    wrapper.close_if_unusable_or_obsolete()
    if wrapper.connection is None:
        return
    released = _released_at.get(wrapper)
    idle = released is None or time.monotonic() - released >= HEALTH_CHECK_AFTER_IDLE_SECONDS
    if idle and not _answers(wrapper):
        wrapper.close()


def connection_released(wrapper: BaseDatabaseWrapper) -> None:
    """After a request or task: close `wrapper` if it is too old or saw an error it did not
    survive, as Django does at a request's end; otherwise note when it went idle."""
    if wrapper.in_atomic_block:
        return
    wrapper.close_if_unusable_or_obsolete()
    _released_at[wrapper] = time.monotonic()


def connections_reused(**kwargs: Any) -> None:
    """request_started, task_prerun: `connection_reused` for this thread's open connections."""
    for wrapper in connections.all(initialized_only=True):
        connection_reused(wrapper)


def connections_released(**kwargs: Any) -> None:
    """request_finished, task_postrun: `connection_released` for this thread's connections."""
    for wrapper in connections.all(initialized_only=True):
        connection_released(wrapper)
