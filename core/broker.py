"""kombu's Redis transport, publishing through one client object per connection pool.

kombu's Redis channel builds a new `redis.Redis` object for every message it publishes (and for
every other command it sends outside the consumer's loop). Building one takes about 0.2 ms of
CPU here, its table of response callbacks, a sixth of a Celery publish (docs/benchmarks.md).
The object is a thin handle on the channel's connection pool, so one per pool serves every
publish; the pool, its connections and everything else stay kombu's.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis


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
