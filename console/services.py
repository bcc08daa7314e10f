"""The console's writes: a worker's heartbeat, and its clean shutdown."""
from __future__ import annotations

from datetime import datetime, timedelta

from console.models import WorkerHeartbeat

# A worker not heard from in this long is forgotten (its row deleted by the next heartbeat).
FORGET_AFTER = timedelta(days=7)


def worker_seen(
    *, hostname: str, queues: list[str], concurrency: int, pid: int, started_at: datetime, now: datetime
) -> None:
    """Record a heartbeat of the worker run that started at `started_at`. Once that run is
    marked stopped, its beats change nothing: one sent as the worker shut down may land after
    the mark, and would show a worker that stopped cleanly as up, then lost. A later run of the
    same hostname (a restart) takes the row over."""
    fields = {"queues": queues, "concurrency": concurrency, "pid": pid, "started_at": started_at,
              "seen_at": now, "stopped_at": None}
    # One conditional UPDATE: a mark that commits while it waits for the row is seen.
    reported = WorkerHeartbeat.objects.filter(hostname=hostname).exclude(
        started_at=started_at, stopped_at__isnull=False
    ).update(**fields)
    if not reported:
        # No row yet (made here), or this run's stopped one (left as it is).
        WorkerHeartbeat.objects.get_or_create(hostname=hostname, defaults=fields)
    WorkerHeartbeat.objects.filter(seen_at__lt=now - FORGET_AFTER).delete()


def worker_stopped(*, hostname: str, started_at: datetime, now: datetime) -> None:
    """Mark the worker run that started at `started_at` as shut down cleanly. Another run of
    the same hostname (a restarted container reusing its name while this one shuts down, or
    two hosts named alike) may have taken the row over: that run is still up, so its row is
    left as it is."""
    WorkerHeartbeat.objects.filter(hostname=hostname, started_at=started_at).update(seen_at=now, stopped_at=now)
