"""Rate limits shared by every API process through Redis, at the cost of one Redis round trip per
process every API_RATE_SYNC_SECONDS rather than one per request.

Counts are kept per fixed window (a minute, for the per-minute limits) and a request is judged
on the sliding-window estimate `previous x (1 - elapsed fraction) + current` (Cloudflare's). A
process admits a request on its own, from the counts it last read from Redis plus its own since,
while both hold:
- the estimate stays within LOCAL_SHARE_OF_LIMIT (80 %) of the limit, and
- what this process admitted for the key since its last sync stays within LOCAL_BURST_SHARE
  (1 %) of the limit (so a limit under 100 is always Redis's to decide);
otherwise it asks Redis, in one atomic script that adds its pending counts and decides with the
totals of every process. Every API_RATE_SYNC_SECONDS a process sends its pending counts and
reads the totals back for all its keys in one pipeline.

The bound: what Redis does not know yet is at most 1 % of the limit per API process, so a
client can exceed its limit by at most (number of API processes) x 1 % of it; near the limit
every decision is Redis's. With Redis unreachable, every process admits on its own counts
(submissions must not fail because the limiter is down) and says so in its log. After a call
fails, a process asks Redis again only REDIS_RETRY_SECONDS later: a Redis that hangs makes each
call wait out the client's timeout (a second), and that wait then falls on one request per
process in that time, not on every request that would have asked. What it admitted meanwhile
is sent with its first sync after.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import redis

from core.pause import PauseAfterFailure

logger = logging.getLogger(__name__)

LOCAL_SHARE_OF_LIMIT = 0.8
LOCAL_BURST_SHARE = 0.01
REDIS_RETRY_SECONDS = 5.0

# Adds this process's pending count to the current window's key, reads the previous window's,
# and admits `weight` more if the estimate allows (adding it too). Answers
# {admitted (1/0), current total, previous total}.
_DECIDE = """
local current = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
local weight = tonumber(ARGV[2])
if previous * tonumber(ARGV[3]) + current + weight <= tonumber(ARGV[4]) then
  current = redis.call('INCRBY', KEYS[1], weight)
  return {1, current, previous}
end
return {0, current, previous}
"""

# Takes `weight` back from a window's count, if the window is still kept.
_GIVE_BACK = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('DECRBY', KEYS[1], ARGV[1])
end
return 0
"""


class Budget(NamedTuple):
    """What `take` decided, and the budget left as this process sees it: `wait` (None: admitted,
    else the seconds until the requests fit), `remaining` (requests that would fit now, by the
    estimate, after these) and `reset_seconds` (until one more than `remaining` fits). Decided
    on its own counts, a process does not know what the others admitted since its last sync:
    `remaining` may be over by that much (at most 1 % of the limit per other API process)."""

    wait: float | None
    remaining: int
    reset_seconds: float


@dataclass
class _Key:
    """One key's counts as this process knows them: each window's total at the last sync, and
    what this process admitted since, per window."""

    synced: dict[int, int] = field(default_factory=dict)
    pending: dict[int, int] = field(default_factory=dict)
    pending_since_sync: int = 0


class RateLimiter:
    """Sliding-window limits for many keys, shared across processes through one Redis."""

    def __init__(self, client: Callable[[], Any], *, sync_seconds: float, clock: Callable[[], float] = time.time,
                 prefix: str = "") -> None:
        self._client = client
        self._sync_seconds = sync_seconds
        self._clock = clock
        self._prefix = prefix
        self._keys: dict[tuple[str, float], _Key] = {}
        self._lock = threading.Lock()
        self._last_sync = clock()
        self._redis_pause = PauseAfterFailure(REDIS_RETRY_SECONDS, clock)
        self._script: Any = None
        self._give_back_script: Any = None

    def _redis_key(self, key: str, window: float, index: int) -> str:
        return f"{self._prefix}rl:{key}:{int(window)}:{index}"

    def hit(self, key: str, *, limit: int, window_seconds: float, weight: int = 1, exact: bool = False,
            at: float | None = None) -> float | None:
        """Admit `weight` requests under `key` (None), or answer the seconds until they fit.
        `exact`: always ask Redis (for rare requests that must never exceed, like logins).
        `at`: the time they count at (default now), for a caller that may `give_back` later."""
        return self.take(key, limit=limit, window_seconds=window_seconds, weight=weight, exact=exact, at=at).wait

    def take(self, key: str, *, limit: int, window_seconds: float, weight: int = 1, exact: bool = False,
             at: float | None = None) -> Budget:
        """`hit`, with the budget left, from the counts the decision read anyway (no round trip)."""
        now = self._clock() if at is None else at
        index, elapsed = divmod(now, window_seconds)
        index = int(index)
        fraction_left = 1 - elapsed / window_seconds
        with self._lock:
            state = self._keys.setdefault((key, window_seconds), _Key())
            previous = state.synced.get(index - 1, 0) + state.pending.get(index - 1, 0)
            current = state.synced.get(index, 0) + state.pending.get(index, 0)
            local = self._redis_pause.paused() or (
                not exact
                and previous * fraction_left + current + weight <= limit * LOCAL_SHARE_OF_LIMIT
                and state.pending_since_sync + weight <= int(limit * LOCAL_BURST_SHARE)
            )
            if local:
                state.pending[index] = state.pending.get(index, 0) + weight
                state.pending_since_sync += weight
            sync_due = now - self._last_sync >= self._sync_seconds
        if local:
            if sync_due:
                self._sync_all()
            return _budget(None, limit=limit, current=current + weight, previous=previous, elapsed=elapsed,
                           window_seconds=window_seconds)
        return self._decide(key, state, index=index, window_seconds=window_seconds, fraction_left=fraction_left,
                            elapsed=elapsed, limit=limit, weight=weight)

    def give_back(self, key: str, *, window_seconds: float, at: float, weight: int = 1) -> None:
        """Take back `weight` that an exact `hit(..., at=at)` admitted under `key`: requests that
        turned out not to count (a login that succeeded). Exact counts are all in Redis, none
        left pending here. With Redis unreachable they stay counted (the limit errs on its side)."""
        name = self._redis_key(key, window_seconds, int(at // window_seconds))
        if self._redis_pause.paused():
            return
        try:
            if self._give_back_script is None:
                self._give_back_script = self._client().register_script(_GIVE_BACK)
            self._give_back_script(keys=[name], args=[weight])
        except redis.RedisError:
            self._redis_pause.failed()
            logger.warning("Rate limit count of %s not given back (Redis unreachable)", key, exc_info=True)

    def _decide(self, key: str, state: _Key, *, index: int, window_seconds: float, fraction_left: float,
                elapsed: float, limit: int, weight: int) -> Budget:
        """Redis decides, with every process's counts (this one's pending included)."""
        with self._lock:
            pending = state.pending.pop(index, 0)
            older = {window: count for window, count in state.pending.items() if window < index}
            state.pending = {}
            state.pending_since_sync = 0
        try:
            if older:  # counts of a window that has just ended: they still weigh on this one
                self._flush({(key, window_seconds): older})
            if self._script is None:
                self._script = self._client().register_script(_DECIDE)
            admitted, current, previous = self._script(
                keys=[self._redis_key(key, window_seconds, index), self._redis_key(key, window_seconds, index - 1)],
                args=[pending, weight, fraction_left, limit, int(window_seconds * 2000)],
            )
        except redis.RedisError:
            self._redis_pause.failed()
            logger.warning("Rate limit of %s decided without Redis (unreachable; asked again in %s s)", key,
                           REDIS_RETRY_SECONDS, exc_info=True)
            with self._lock:
                state.pending[index] = state.pending.get(index, 0) + pending + weight
                current = state.synced.get(index, 0) + state.pending[index]
                previous = state.synced.get(index - 1, 0) + state.pending.get(index - 1, 0)
            return _budget(None, limit=limit, current=current, previous=previous, elapsed=elapsed,
                           window_seconds=window_seconds)
        current, previous = int(current), int(previous)
        with self._lock:
            state.synced = {index: current, index - 1: previous}
        wait = None if admitted else _wait_seconds(limit=limit, weight=weight, current=current, previous=previous,
                                                   elapsed=elapsed, window_seconds=window_seconds)
        return _budget(wait, limit=limit, current=current, previous=previous, elapsed=elapsed,
                       window_seconds=window_seconds)

    def _flush(self, counts: dict[tuple[str, float], dict[int, int]]) -> None:
        pipe = self._client().pipeline(transaction=False)
        for (key, window), by_index in counts.items():
            for index, count in by_index.items():
                name = self._redis_key(key, window, index)
                pipe.incrby(name, count)
                pipe.pexpire(name, int(window * 2000))
        pipe.execute()

    def _sync_all(self) -> None:
        """Send every key's pending counts and read back the totals of their current and
        previous windows: one round trip for all of this process's keys. Keys with nothing
        counted in either window are forgotten."""
        now = self._clock()
        with self._lock:
            if now - self._last_sync < self._sync_seconds or self._redis_pause.paused():
                return  # another thread just did, or Redis failed moments ago
            self._last_sync = now
            taken = {name: state.pending for name, state in self._keys.items()}
            for state in self._keys.values():
                state.pending, state.pending_since_sync = {}, 0
        reads: list[tuple[tuple[str, float], int, int]] = []  # (key, window index, result position)
        try:
            pipe = self._client().pipeline(transaction=False)
            position = 0
            for (key, window), pending in taken.items():
                for pending_index, count in pending.items():
                    name = self._redis_key(key, window, pending_index)
                    pipe.incrby(name, count)
                    pipe.pexpire(name, int(window * 2000))
                    position += 2
                index = int(now // window)
                for read_index in (index, index - 1):
                    pipe.get(self._redis_key(key, window, read_index))
                    reads.append(((key, window), read_index, position))
                    position += 1
            results = pipe.execute()
        except redis.RedisError:
            self._redis_pause.failed()
            logger.warning("Rate limit counts not shared: Redis unreachable (asked again in %s s)",
                           REDIS_RETRY_SECONDS, exc_info=True)
            with self._lock:  # keep counting them here; the next sync sends them
                for name, pending in taken.items():
                    state = self._keys.setdefault(name, _Key())
                    for index, count in pending.items():
                        state.pending[index] = state.pending.get(index, 0) + count
            return
        fresh: dict[tuple[str, float], dict[int, int]] = {}
        for name, read_index, at in reads:
            fresh.setdefault(name, {})[read_index] = int(results[at] or 0)
        with self._lock:
            for name, synced in fresh.items():
                state = self._keys.get(name)
                if state is None:
                    continue
                if not any(synced.values()) and not state.pending:
                    del self._keys[name]
                else:
                    state.synced = synced


def _wait_seconds(*, limit: int, weight: int, current: int, previous: int, elapsed: float,
                  window_seconds: float) -> float:
    """Seconds until `weight` more fit under `limit`, by the sliding-window estimate."""
    if weight > limit:
        return window_seconds  # it never fits; try again after a whole window (and be told again)
    room = limit - weight - current
    if room >= 0 and previous > 0:
        # previous x (1 - (elapsed + t) / window) <= room
        return max(0.001, window_seconds * (1 - room / previous) - elapsed)
    # Not before the next window; then its previous window is this one's `current`.
    left = window_seconds - elapsed
    if current <= 0:
        return max(0.001, left)
    return max(0.001, left + max(0.0, window_seconds * (1 - (limit - weight) / current)))


def _budget(wait: float | None, *, limit: int, current: int, previous: int, elapsed: float,
            window_seconds: float) -> Budget:
    """The budget left after a decision, by the estimate it was made on (`current` with what it
    admitted)."""
    remaining = max(0, int(limit - previous * (1 - elapsed / window_seconds) - current))
    reset = _wait_seconds(limit=limit, weight=remaining + 1, current=current, previous=previous, elapsed=elapsed,
                          window_seconds=window_seconds)
    return Budget(wait, remaining, reset)


def ceiling_seconds(seconds: float) -> int:
    """A wait as a whole number of seconds for Retry-After (never 0: "now" would be wrong)."""
    return max(1, math.ceil(seconds))
