"""One run at a time of a periodic task: those that work in batches (jobs.prune, webhooks.prune)
and the rules that act on rows apart (jobs.enforce_deadlines, jobs.fail_abandoned:
core/rows_apart.py). A slot of the task's in Redis (core/slots.py), limit one, that a run takes
before it starts and lets go once it ends.

Not a PostgreSQL advisory lock: behind PgBouncer in transaction mode (docs/deployment.md) a
session lock is taken on one server connection and let go on another, where the unlock fails,
so it stayed held on a pooled connection nobody would ever unlock, and every later run found
itself not alone and deleted nothing, for good. A slot is leased instead, on Redis's clock: one
whose run died (a worker killed) or overran its bound stops being in the way once its lease
ends; the dead run's own message, redelivered at once (acks_late), looks again then rather
than doing nothing (`look_again_after_a_dead_run`), or the chain of runs through a backlog would
wait for beat's next hourly run. And with Redis unreachable or not configured (embedded mode)
every run is let through, as before there was a slot at all: two runs side by side skip the
rows the other holds, and take turns on an owner's count row, a batch at a time.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import redis

from core import cache_redis, metrics
from core.slots import Slots

# The longest one batch of a prune is taken to last (seconds): ten times the slowest measured,
# 190 ms for 1,000 jobs with their events (docs/reliability.md, "Pruning at two million
# events"). A run's lease is its batches at this, so a run that dies keeps the others out for
# minutes, not for good; one slower than that has a second run beside it, as before the slot.
BATCH_SECONDS = 2.0
# The longest a rule's act on one row is taken to last (seconds): twice the slowest measured, 20 ms
# for a job whose finish raised on a loaded machine (core/rows_apart.py; 2.4 ms a row acted on, 3
# ms one that raised, idle). A rule's lease is the rows it reads at most at this: 500 a look, 20 s.
ROW_SECONDS = 0.04


def _redis() -> redis.Redis | None:
    # Embedded mode (`make run` without Redis): no shared slot, every run let through.
    return cache_redis.client() if cache_redis.configured() else None


# Named apart as the queues are (cache_redis.queue_key): services or test runs sharing one Redis
# each prune their own database, and must not keep each other's runs out.
slots = Slots(_redis, prefix=cache_redis.queue_key("housekeeping-slots:"))


def batches_lease_seconds(batches: int) -> float:
    """How long a prune's run of `batches` batches holds its slot at most (its lease)."""
    return max(1, batches) * BATCH_SECONDS


def rows_lease_seconds(rows: int) -> float:
    """How long a rule's run reading `rows` rows at most holds its slot (its lease)."""
    return max(1, rows) * ROW_SECONDS


@contextlib.contextmanager
def run_alone(name: str, *, lease: float) -> Iterator[bool]:
    """Whether no other run of `name` is under way in the service (whatever its worker): its
    slot, tried, not waited for, held until the block ends and for at most `lease` seconds (the
    run's bound: batches_lease_seconds, rows_lease_seconds). True, with no slot, when Redis
    cannot be reached: a run that finds one under way has nothing to do (and is counted neither
    as a run nor as a failure: core.metrics), and a prune or a rule must never stop for want of
    Redis."""
    slot = slots.acquire(name, limit=1, lease_seconds=lease)
    if slot is None:
        metrics.periodic_run_skipped()
    try:
        yield slot is not None
    finally:
        if slot is not None:
            slot.release()


def look_again_after_a_dead_run(task: Any, *, lease: float) -> bool:
    """For a run of `task` that found its slot held: whether it queued a run of its own for once
    the holder's `lease` has surely run out. Only a redelivered message does:
    it is most likely the run that holds the slot, its worker killed mid-run (a deploy's SIGKILL
    after the grace period), brought back by the broker within seconds, and it was that run's to
    queue the next. Returning nothing cut the chain through a backlog until beat's next hourly
    run. A message never delivered before (beat's, or a chain's) still does nothing: the run
    under way queues the next itself."""
    if not (task.request.delivery_info or {}).get("redelivered"):
        return False
    task.apply_async(countdown=lease)
    return True
