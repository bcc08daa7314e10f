"""Leased slots shared by every process through Redis: at most `limit` holders of a key at once.

A slot is a member of a sorted set scored by when it was taken (or its holder last refreshed
it); taking one first drops those older than the lease, so a holder that died (SIGKILL, OOM)
frees its slot when its lease runs out, without anyone cleaning up. The time is Redis's own
(`TIME`), so hosts whose clocks differ agree.

Turns pace a key instead: at most one taken every so often (a key set with that expiry, if
absent), on Redis's clock too.

With Redis unreachable or not configured, every request is admitted (`Slot.held` False): a
limit on concurrency or pace must never stop the work it shares out. The log says so, once a
minute.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from core import log_volume

logger = logging.getLogger(__name__)

# How often a holder waiting for a slot asks again (seconds).
POLL_SECONDS = 0.01

# KEYS[1]: the key's set, each holder scored by when it took its slot; ARGV: limit, lease (ms),
# the new holder. Answers {1} (taken) or {0, how long (ms) the oldest holder has held its slot}.
_ACQUIRE = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, now - tonumber(oldest[2])}
"""
# KEYS[1]: the key's set; ARGV: lease (ms), the holder. Scores the holder (if it still holds a
# slot) as taken now.
_REFRESH = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if redis.call('ZADD', KEYS[1], 'XX', 'CH', now, ARGV[2]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
"""


@dataclass
class Slot:
    """A slot taken (`held`), or an admission without one (Redis unreachable). An admission whose
    request timed out (`unsure`: Redis answered later than the client waited, 1 s) may hold a
    slot all the same, under its holder id: its release lets that go too (one more request to a
    Redis that may be down, never raising), or the slot kept the key's others out for its whole
    lease. It is not refreshed: a slot it did not know it took runs out with its first lease, as
    one never taken."""

    key: str
    holder: str
    held: bool
    lease_ms: int
    _slots: Slots
    unsure: bool = False

    def refresh(self) -> None:
        """Start the slot's lease again, as if taken now: a holder that keeps working (and
        telling so) is never taken for dead, and those waiting judge it young."""
        if self.held:
            self._slots.refresh(self)

    def release(self) -> None:
        if self.held or self.unsure:
            self._slots.release(self)


class Slots:
    """Counting slots per key; `client` makes this process's Redis client (called once per
    process, after a fork too)."""

    def __init__(self, client: Callable[[], redis.Redis | None], *, prefix: str = "") -> None:
        self._make_client = client
        self._prefix = prefix
        self._client: redis.Redis | None = None
        self._scripts: tuple[Any, Any] = (None, None)
        self._pid = 0
        self._lock = threading.Lock()
        self._warning = log_volume.Occasional(logger)

    def _redis(self) -> tuple[redis.Redis | None, tuple[Any, Any]]:
        """This process's client, and its acquire and refresh scripts."""
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                self._client = client = self._make_client()
                if client is not None:
                    self._scripts = (client.register_script(_ACQUIRE), client.register_script(_REFRESH))
            return self._client, self._scripts

    def acquire(
        self, key: str, *, limit: int, lease_seconds: float, wait_seconds: float = 0.0,
        wait_while_held_under_seconds: float | None = None,
    ) -> Slot | None:
        """A slot of `key` (at most `limit` held at once), or None when none is free. Waits up to
        `wait_seconds` for one to free; with `wait_while_held_under_seconds`, only while the
        oldest holder has held its slot less than that (holders that are quick to finish),
        giving up at once on holders that are not. Never raises."""
        name = f"{self._prefix}{key}"
        holder = uuid.uuid4().hex
        lease_ms = max(1, int(lease_seconds * 1000))
        client, (script, _) = self._redis()
        if client is None or limit <= 0:
            return Slot(name, holder, False, lease_ms, self)
        give_up_at = time.monotonic() + wait_seconds
        while True:
            try:
                answer = script(keys=[name], args=[limit, lease_ms, holder])
            except redis.RedisError as exc:
                self._warn("taken without Redis (unreachable): admitted", exc)
                # Only a request that timed out may have run: a refused one (Redis down) costs
                # its release nothing.
                return Slot(name, holder, False, lease_ms, self, unsure=isinstance(exc, redis.TimeoutError))
            if answer[0]:
                return Slot(name, holder, True, lease_ms, self)
            held_ms = int(answer[1])
            slow = wait_while_held_under_seconds is not None and held_ms >= wait_while_held_under_seconds * 1000
            if slow or time.monotonic() + POLL_SECONDS > give_up_at:
                return None
            time.sleep(POLL_SECONDS)

    def turn(self, key: str, *, every_seconds: float, wait_seconds: float) -> bool:
        """Take `key`'s turn: True at most once every `every_seconds`, across every process.
        Waits up to `wait_seconds` for the last turn taken to run out; False when it would not
        in time. Never raises."""
        name = f"{self._prefix}{key}"
        client, _ = self._redis()
        if client is None:
            return True
        give_up_at = time.monotonic() + wait_seconds
        while True:
            try:
                if client.set(name, b"1", nx=True, px=max(1, round(every_seconds * 1000))):
                    return True
                left_ms = client.pttl(name)
            except redis.RedisError as exc:
                self._warn("turn taken without Redis (unreachable): admitted", exc)
                return True
            pause = max(left_ms, 1) / 1000  # gone in between (-2): at once, nearly
            if time.monotonic() + pause > give_up_at:
                return False
            time.sleep(pause)

    def turn_end(self, key: str) -> None:
        """End `key`'s last turn now (its spacing changed: a turn taken at a slower one would
        hold the next back for the old spacing). Never raises."""
        client, _ = self._redis()
        if client is None:
            return
        try:
            client.delete(f"{self._prefix}{key}")
        except redis.RedisError as exc:
            self._warn("turn not ended (Redis unreachable): it runs out by itself", exc)

    def refresh(self, slot: Slot) -> None:
        client, (_, script) = self._redis()
        if client is None:
            return
        try:
            script(keys=[slot.key], args=[slot.lease_ms, slot.holder])
        except redis.RedisError as exc:
            self._warn("not refreshed (Redis unreachable): its lease may end first", exc)

    def release(self, slot: Slot) -> None:
        client, _ = self._redis()
        if client is None:
            return
        try:
            client.zrem(slot.key, slot.holder)
        except redis.RedisError as exc:
            self._warn("not released (Redis unreachable): its lease will end it", exc)

    def held(self, key: str) -> int:
        """How many slots of `key` are held or expired unnoticed (a look for tests and operators)."""
        client, _ = self._redis()
        if client is None:
            return 0
        return int(client.zcard(f"{self._prefix}{key}"))

    def _warn(self, what: str, exc: redis.RedisError) -> None:
        self._warning.warning("Concurrency slot %s", what, exc_info=exc)
