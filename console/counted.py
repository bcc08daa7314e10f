"""The operators' counts whose cost grows with what they count (jobs by status, the last hour's
errors, the deliveries pending, held and failing): each made at most once in COUNTED_FOR_SECONDS
by a process and served meanwhile to the console's refreshes (every 5 s, each open console) and
/metrics' scrapes.

Counted at 100,000 unfinished jobs and 1,000,000 deliveries (docs/benchmarks.md, "Counts that
grow with what they count"): jobs by status 40-52 ms, the errors of 100,000 jobs failed in the
last hour 91-217 ms, the held deliveries 14-20 ms at 100,000, the pending 3-8 ms at 45,000, the
failing receivers 21-105 ms; a tenfold backlog costs tenfold or more (jobs by status 425-632 ms
at a million waiting), and every open console and every scrape of every API process made them
again. A count kept by
triggers (as jobs_jobcounts keeps a client's) would be exact at no read's cost, but every
client's submit, start and finish would update the same few rows, one at a time; a count capped
at some N would be cheap but would stop /metrics' alerts at N. So the figures are exact as of
their count, at most COUNTED_FOR_SECONDS old (Prometheus's usual scrape interval), and the
console says when they were counted.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from django.utils import timezone

# How long a count serves this process's reads (s): Prometheus's usual scrape interval; the
# console's counts move at that pace, not at its 5 s refresh.
COUNTED_FOR_SECONDS = 15.0

T = TypeVar("T")


@dataclass(frozen=True)
class Snapshot(Generic[T]):
    value: T
    # When it was counted (the console shows it), and time.monotonic() then (its age).
    at: datetime
    monotonic: float


_all: list[Counted[Any]] = []


class Counted(Generic[T]):
    """One count, made by `count(now=...)` at most once in COUNTED_FOR_SECONDS by this process.
    One thread counts at a time (a thread serves each request): those asking meanwhile wait for
    its count rather than make theirs. A count that raises is not kept."""

    def __init__(self, count: Callable[..., T]) -> None:
        self._count = count
        self._last: Snapshot[T] | None = None
        self._lock = threading.Lock()
        _all.append(self)

    def read(self, *, now: datetime | None = None) -> Snapshot[T]:
        with self._lock:
            last = self._last
            if last is None or time.monotonic() - last.monotonic >= COUNTED_FOR_SECONDS:
                now = now or timezone.now()
                last = self._last = Snapshot(self._count(now=now), now, time.monotonic())
            return last

    def forget(self) -> None:
        with self._lock:
            self._last = None


def forget_all() -> None:
    """The next read of each count counts anew (tests that change what is counted between two
    reads)."""
    for counted in _all:
        counted.forget()
