"""The shared rate limiter (core/ratelimit.py), on this run's Redis with a clock the test moves:
what it admits across processes, how seldom it asks Redis, and the waits it answers."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import settings

from core.ratelimit import REDIS_RETRY_SECONDS, RateLimiter

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


def test_the_budget_left_is_told_from_the_counts_each_decision_read(shared: Any) -> None:
    clock = Clock()
    [limiter] = processes(shared, clock, 1)

    # Far from the limit the process decides alone; near it (3 a minute) Redis does
    alone = [limiter.take("far", limit=1000, window_seconds=WINDOW) for _ in range(3)]
    near = [limiter.take("near", limit=3, window_seconds=WINDOW) for _ in range(4)]

    assert [budget.remaining for budget in alone] == [999, 998, 997]
    assert [budget.remaining for budget in near] == [2, 1, 0, 0]
    assert [budget.wait is None for budget in near] == [True, True, True, False]
    # Refused, one more fits when the wait is over; what was spent weighs until the next window ends
    assert near[-1].reset_seconds == near[-1].wait
    assert all(0 < budget.reset_seconds <= 2 * WINDOW for budget in alone + near)
    assert shared[0].round_trips == 4


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


class FlakyRedis:
    """The real client while `up`; while not, each use fails as a hung Redis's would (after the
    client's timeout), and is counted."""

    def __init__(self, client: CountingRedis) -> None:
        self.client = client
        self.up = True
        self.failed_calls = 0

    def __call__(self) -> Any:
        if not self.up:
            self.failed_calls += 1
            raise redis.TimeoutError("Timeout reading from socket")
        return self.client


def test_after_redis_fails_a_process_asks_it_again_only_some_seconds_later(shared: Any) -> None:
    # Given a process whose Redis has just stopped answering, and a limit so low that every
    # request would be Redis's to decide
    clock = Clock()
    flaky = FlakyRedis(shared[0])
    limiter = RateLimiter(flaky, sync_seconds=0.5, clock=clock, prefix=shared[1])
    flaky.up = False

    # When requests keep coming for a few seconds
    first = clock.now
    statuses = []
    for n in range(40):
        clock.now = first + n * (REDIS_RETRY_SECONDS - 0.1) / 40
        statuses.append(limiter.hit("x", limit=2, window_seconds=WINDOW))

    # Then each is admitted, and only the first waited on Redis
    assert statuses == [None] * 40
    assert flaky.failed_calls == 1

    # and once that time has passed, the next request asks it again
    clock.now = first + REDIS_RETRY_SECONDS
    limiter.hit("x", limit=2, window_seconds=WINDOW)
    assert flaky.failed_calls == 2


def test_what_a_process_admitted_while_redis_was_down_counts_once_it_answers(shared: Any) -> None:
    # Given a process that admitted 3 requests of a client while its Redis was down
    clock = Clock()
    flaky = FlakyRedis(shared[0])
    limiter = RateLimiter(flaky, sync_seconds=0.5, clock=clock, prefix=shared[1])
    flaky.up = False
    for _ in range(3):
        assert limiter.hit("y", limit=4, window_seconds=WINDOW) is None

    # When Redis answers again and the retry time has passed
    flaky.up = True
    clock.now += REDIS_RETRY_SECONDS

    # Then another process of the client sees those 3: one more fits under the limit of 4, not two
    [other] = processes(shared, clock, 1)
    assert limiter.hit("y", limit=4, window_seconds=WINDOW) is None
    assert other.hit("y", limit=4, window_seconds=WINDOW) is not None
