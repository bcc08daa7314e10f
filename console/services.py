"""The console's writes: a worker's heartbeat, and its clean shutdown."""
from __future__ import annotations

from datetime import datetime, timedelta

from console.models import WorkerHeartbeat

# A worker not heard from in this long is forgotten (its row deleted by the next heartbeat).
FORGET_AFTER = timedelta(days=7)


def worker_seen(
    *, hostname: str, queues: list[str], concurrency: int, pid: int, started_at: datetime, now: datetime
) -> None:
    WorkerHeartbeat.objects.update_or_create(
        hostname=hostname,
        defaults={"queues": queues, "concurrency": concurrency, "pid": pid, "started_at": started_at,
                  "seen_at": now, "stopped_at": None},
    )
    WorkerHeartbeat.objects.filter(seen_at__lt=now - FORGET_AFTER).delete()


def worker_stopped(*, hostname: str, now: datetime) -> None:
    WorkerHeartbeat.objects.filter(hostname=hostname).update(seen_at=now, stopped_at=now)
