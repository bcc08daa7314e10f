"""A wall-clock limit on a whole outbound request, however slowly the other end answers.

Socket timeouts apply to each read: a server that sends one byte every few seconds never trips
them, through the TLS handshake, the status line, the headers or the body. Here each request
gets a `Deadline`; the connections it uses register their sockets with it (`WatchedHTTPConnection`
and `WatchedHTTPSConnection`, when they connect and when a kept-alive one is reused), and one
watchdog thread per process shuts those sockets down when the deadline passes. The blocked read
or write then fails at once, and the request ends as an error that `Deadline.expired` explains.

Name resolution cannot be interrupted that way (getaddrinfo is one blocking call), so
`resolve_within` runs it on a pool and stops waiting at the deadline (`resolve_started` leaves
the waiting to a caller with several names to wait for); a resolver that never answers keeps a
pool thread, not the request. Each lookup is on behalf of someone (a client): each one's lookups
run RESOLVER_THREADS_PER_KEY at a time and queue behind each other only, so the lookups a hung
name server keeps (past the requests that asked) hold up no one else's.
"""
from __future__ import annotations

import heapq
import itertools
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from urllib3.connection import HTTPConnection, HTTPSConnection

# How late past its deadline a request can end: the watchdog's wake-up and the blocked call's
# return after its socket is shut down (measured in milliseconds; a second is the promise).
SLACK_SECONDS = 1.0
# Name resolutions in flight at once per process and key (a client), each waiting on the
# system resolver; and for all keys together, a bound far above what one key holds.
RESOLVER_THREADS_PER_KEY = 8
_RESOLVER_THREADS = 256


class Deadline:
    """One request's limit: the sockets it uses, shut down together when it passes."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.expired = False
        self._done = False
        self._sockets: dict[int, socket.socket] = {}  # fd -> our duplicate of it
        self._lock = threading.Lock()

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def attach(self, sock: socket.socket) -> None:
        """Watch `sock` (a plain or TLS socket). A duplicate of its descriptor is kept, so the
        watchdog never touches a descriptor the request has closed and the system reused;
        shutting the duplicate down ends the connection for every descriptor of it."""
        try:
            fd = sock.fileno()
        except OSError:
            return
        if fd < 0:
            return
        with self._lock:
            if self._done or fd in self._sockets:
                return
            watched = socket.socket(fileno=os.dup(fd))
            self._sockets[fd] = watched
            if self.expired:
                _shut(watched)

    def expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            for watched in self._sockets.values():
                _shut(watched)

    def close(self) -> None:
        """The request is over: stop watching and let go of the duplicates."""
        with self._lock:
            self._done = True
            for watched in self._sockets.values():
                watched.close()
            self._sockets.clear()


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # not connected yet, or already closed by the other end


class _Watchdog:
    """One thread per process that expires deadlines in time order (started after a fork)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Deadline]] = []
        self._counter = itertools.count()
        self._wake = threading.Condition()
        self._pid = 0

    def watch(self, deadline: Deadline) -> None:
        with self._wake:
            if self._pid != os.getpid():  # a forked child has the heap but not the thread
                self._pid = os.getpid()
                self._heap = []
                threading.Thread(target=self._run, name="http-deadlines", daemon=True).start()
            heapq.heappush(self._heap, (deadline.at, next(self._counter), deadline))
            if self._heap[0][2] is deadline:
                self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._heap:
                    self._wake.wait()
                at, _, deadline = self._heap[0]
                wait = at - time.monotonic()
                if wait > 0:
                    self._wake.wait(wait)
                    continue
                heapq.heappop(self._heap)
            deadline.expire()  # a no-op for a request that has finished


_watchdog = _Watchdog()
_current = threading.local()


class deadline_for:
    """`with deadline_for(seconds) as deadline:` every connection this thread uses inside the
    block is watched by `deadline`."""

    def __init__(self, seconds: float) -> None:
        self.deadline = Deadline(seconds)

    def __enter__(self) -> Deadline:
        _current.deadline = self.deadline
        _watchdog.watch(self.deadline)
        return self.deadline

    def __exit__(self, *exc: object) -> None:
        _current.deadline = None
        self.deadline.close()


def _attach_current(sock: socket.socket | None) -> None:
    deadline: Deadline | None = getattr(_current, "deadline", None)
    if deadline is not None and sock is not None:
        deadline.attach(sock)


class _Watched:
    """Mixed into urllib3's connections: their socket watched by the thread's current deadline."""

    sock: socket.socket | None

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # type: ignore[misc]
        _attach_current(sock)  # before the TLS handshake, which a server can drip too
        return sock  # type: ignore[no-any-return]

    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach_current(self.sock)  # a kept-alive connection, reused
        super().request(*args, **kwargs)  # type: ignore[misc]


class WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _Resolvers:
    """The process's lookups: on a shared pool of threads, but each key's RESOLVER_THREADS_PER_KEY
    at a time, the rest queued for that key alone. With one queue for all (as it was), a client
    whose name server never answers kept the pool's every thread, and every other client's
    lookups waited behind them until their own budgets ran out: refused submissions, deliveries
    given up on."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=_RESOLVER_THREADS, thread_name_prefix="resolve")
        self._lock = threading.Lock()
        self._running: dict[Hashable, int] = {}
        self._waiting: dict[Hashable, deque[_Lookup]] = {}

    def submit(self, key: Hashable, lookup: _Lookup) -> None:
        with self._lock:
            waiting = self._waiting.get(key)
            while waiting and waiting[0].future.cancelled():  # their requests gave up on them
                waiting.popleft()
            if self._running.get(key, 0) >= RESOLVER_THREADS_PER_KEY:
                self._waiting.setdefault(key, deque()).append(lookup)
                return
            self._running[key] = self._running.get(key, 0) + 1
        self._pool.submit(self._run, key, lookup)

    def _run(self, key: Hashable, lookup: _Lookup) -> None:
        try:
            lookup.run()
        finally:
            following = self._next(key)
            if following is not None:
                self._pool.submit(self._run, key, following)

    def _next(self, key: Hashable) -> _Lookup | None:
        """The key's next lookup still wanted, keeping the thread's place; or the place given up."""
        with self._lock:
            waiting = self._waiting.get(key)
            while waiting:
                lookup = waiting.popleft()
                if not lookup.future.cancelled():
                    return lookup
            self._waiting.pop(key, None)
            self._running[key] -= 1
            if not self._running[key]:
                del self._running[key]
            return None


class _Lookup:
    def __init__(self, resolve: Callable[[str, int], Sequence[str]], host: str, port: int) -> None:
        self.future: Future[Sequence[str]] = Future()
        self._call = resolve, host, port

    def run(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return  # cancelled while it waited
        resolve, host, port = self._call
        try:
            self.future.set_result(resolve(host, port))
        except BaseException as exc:  # noqa: BLE001 -- the caller's to see, as ThreadPoolExecutor hands it over
            self.future.set_exception(exc)


_resolvers: _Resolvers | None = None
_resolvers_pid = 0
_resolvers_lock = threading.Lock()


def resolve_started(
    resolve: Callable[[str, int], Sequence[str]], host: str, port: int, *, key: Hashable = None
) -> Future[Sequence[str]]:
    """`resolve(host, port)` started on the process's resolver pool, queued behind `key`'s own
    lookups only (`key`: whom it is for, a client's id); wait on the future for as long as the
    caller may (cancelling it, if it has not started, frees its place in the queue)."""
    global _resolvers, _resolvers_pid
    with _resolvers_lock:
        if _resolvers is None or _resolvers_pid != os.getpid():
            _resolvers = _Resolvers()
            _resolvers_pid = os.getpid()
        resolvers = _resolvers
    lookup = _Lookup(resolve, host, port)
    resolvers.submit(key, lookup)
    return lookup.future


def resolve_within(
    resolve: Callable[[str, int], Sequence[str]], host: str, port: int, *, seconds: float, key: Hashable = None
) -> Sequence[str]:
    """`resolve(host, port)` (for `key`, see resolve_started), or TimeoutError when it has not
    answered within `seconds`."""
    future = resolve_started(resolve, host, port, key=key)
    try:
        return future.result(timeout=seconds)
    except FutureTimeout:
        future.cancel()
        raise TimeoutError(f"no answer from the resolver within {seconds:g} s") from None
