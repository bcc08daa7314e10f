"""The shared rate limiter (core/ratelimit.py), on this run's Redis with a clock the test moves:
what it admits across processes, how seldom it asks Redis, and the waits it answers."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import settings

from core.ratelimit import RateLimiter

WINDOW = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_040.0  # 20 s into a window (1,000,020 is a multiple of 60)

    def __call__(self) -> float:
        return self.now


class CountingRedis:
    """The real client, counting the round trips made through it."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.round_trips = 0

    def register_script(self, script: str) -> Any:
        registered = self.client.register_script(script)

        def run(**kwargs: Any) -> Any:
            self.round_trips += 1
            return registered(**kwargs)

        return run

    def pipeline(self, **kwargs: Any) -> Any:
        pipe = self.client.pipeline(**kwargs)
        execute = pipe.execute

        def counted() -> Any:
            self.round_trips += 1
            return execute()

        pipe.execute = counted
        return pipe


@pytest.fixture
def shared() -> Iterator[tuple[CountingRedis, str]]:
    client = redis.Redis.from_url(settings.CACHE_URL)
    prefix = f"test-ratelimit-{uuid.uuid4().hex[:8]}:"
    yield CountingRedis(client), prefix
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)


def processes(shared: tuple[CountingRedis, str], clock: Clock, count: int) -> list[RateLimiter]:
    client, prefix = shared
    return [RateLimiter(lambda: client, sync_seconds=0.5, clock=clock, prefix=prefix) for _ in range(count)]


def test_across_processes_a_client_exceeds_its_limit_by_at_most_one_percent_each(shared: Any) -> None:
    clock = Clock()
    limiters = processes(shared, clock, 4)

    admitted = 0
    for n in range(3000):  # a client spread over 4 processes, 3x its limit within 3 s
        clock.now += 0.001
        admitted += limiters[n % 4].hit("c", limit=1000, window_seconds=WINDOW) is None

    assert 1000 <= admitted <= 1000 + 4 * 10


def test_far_from_the_limit_a_process_asks_redis_about_once_per_sync(shared: Any) -> None:
    clock = Clock()
    [limiter] = processes(shared, clock, 1)

    for n in range(500):  # 100 requests a second, for 5 s, of a limit of 6,000 a minute
        clock.now += 0.01
        assert limiter.hit(f"client-{n % 48}", limit=6000, window_seconds=WINDOW) is None

    assert shared[0].round_trips <= 11  # one pipeline per 0.5 s for all 48 clients


def test_the_wait_answered_is_when_the_request_fits(shared: Any) -> None:
    clock = Clock()
    [limiter] = processes(shared, clock, 1)
    for _ in range(10):
        assert limiter.hit("w", limit=10, window_seconds=WINDOW) is None

    wait = limiter.hit("w", limit=10, window_seconds=WINDOW)

    assert wait is not None and 0 < wait <= 2 * WINDOW
    clock.now += wait - 1
    assert limiter.hit("w", limit=10, window_seconds=WINDOW) is not None
    clock.now += 1.01
    assert limiter.hit("w", limit=10, window_seconds=WINDOW) is None


def test_a_weight_larger_than_the_limit_never_fits(shared: Any) -> None:
    [limiter] = processes(shared, Clock(), 1)

    assert limiter.hit("big", limit=5, window_seconds=WINDOW, weight=6) == WINDOW
    assert limiter.hit("big", limit=5, window_seconds=WINDOW, weight=5) is None


def test_with_redis_down_every_request_is_admitted() -> None:
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    limiter = RateLimiter(lambda: dead, sync_seconds=0.5, clock=Clock())

    assert all(limiter.hit("x", limit=2, window_seconds=WINDOW) is None for _ in range(5))


def test_with_redis_down_when_the_process_first_connects_every_request_is_admitted() -> None:
    # A single-connection client connects as it is made: the factory itself raises.
    def connect() -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, single_connection_client=True)

    limiter = RateLimiter(connect, sync_seconds=0.5, clock=Clock())

    assert all(limiter.hit("x", limit=2, window_seconds=WINDOW) is None for _ in range(5))
