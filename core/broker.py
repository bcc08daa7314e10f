"""kombu's transports as the service uses them: Redis publishing through one client object per
connection pool, and the filesystem (make run's embedded broker) letting its worker stop at once.

kombu's Redis channel builds a new `redis.Redis` object for every message it publishes (and for
every other command it sends outside the consumer's loop). Building one takes about 0.2 ms of
CPU here, its table of response callbacks, a sixth of a Celery publish (docs/benchmarks.md).
The object is a thin handle on the channel's connection pool, so one per pool serves every
publish; the pool, its connections and everything else stay kombu's.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from time import monotonic
from typing import Any

from kombu.transport import filesystem, redis


class Channel(redis.Channel):
    _client_for_pool: tuple[Any, Any] | None = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        pool = self.pool  # a new one after kombu dropped the old (a reconnect): a new client
        if self._client_for_pool is None or self._client_for_pool[0] is not pool:
            self._client_for_pool = (pool, self._create_client())
        yield self._client_for_pool[1]


class Transport(redis.Transport):
    Channel = Channel


class FilesystemTransport(filesystem.Transport):
    """kombu's filesystem transport, whose wait for a message ends at its next poll once the
    worker of this process is stopping.

    A worker on a transport with no event loop (this one) runs Celery's synchronous loop, which
    looks whether it should stop only between two waits of 2 s (`drain_events(timeout=2.0)`),
    and waits once more after it saw the stop: an idle worker took 2-4 s to begin its warm
    shutdown, of the 5 s honcho (make run) gives it before it kills. Here a wait is a series of
    polls, each a polling interval long, that ends when `stopping` is set (core/celery.py, as the
    worker's stop begins)."""

    # Set from the worker's signal handler, in the main thread between two of its steps: a flag
    # read once a poll, no lock (the handler could run while that thread holds one).
    stopping = False

    def drain_events(self, connection: Any, timeout: float | None = None) -> None:
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            poll = self.polling_interval
            if deadline is not None:
                poll = min(poll, max(deadline - monotonic(), 0.0))
            try:
                return super().drain_events(connection, timeout=poll)
            except TimeoutError:  # kombu raises socket.timeout, an alias
                if FilesystemTransport.stopping or (deadline is not None and monotonic() >= deadline):
                    raise
