"""The console's writes: a worker's heartbeat, and its clean shutdown."""
from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import Case, F, Q, When
from django.db.models.functions import Now

from console.models import WorkerHeartbeat

# How often a worker reports itself (console/heartbeats.py).
HEARTBEAT_SECONDS = 10.0
# A worker not heard from in this long is shown as lost, and consumes nothing.
LOST_AFTER_SECONDS = 3 * HEARTBEAT_SECONDS
# A worker not heard from in this long is forgotten (its row deleted by the next heartbeat).
FORGET_AFTER = timedelta(days=7)


def worker_seen(*, hostname: str, queues: list[str], concurrency: int, pid: int, started_at: datetime) -> None:
    """Record a heartbeat of the worker run that started at `started_at`. Once that run is
    marked stopped, its beats change nothing: one sent as the worker shut down may land after
    the mark, and would show a worker that stopped cleanly as up, then lost. A later run of the
    same hostname (a restart) takes the row over, and keeps it while it is up: an older run's
    beats leave it (two runs of one name, a restarted container's while the old one shuts down,
    took it in turns, and the old one's last beat just before its mark showed the new one
    stopped until its next beat). An older run still beating takes it back once the newer one
    is stopped or lost.

    The beat is stamped, and a newer run judged up, by the database's clock (Now()), which every
    reader judges it by too (console/selectors.py): by the worker host's, a host minutes behind
    showed its workers lost and their queues without a consumer, and one ahead kept a dead one up
    for as long. `started_at` is by the worker's clock: it names the run (worker_stopped), and
    orders two runs of one name, on one host as a rule. How long the run is up is counted from
    its first beat the row records (`up_since`), by the database's clock too: from `started_at`,
    a worker just started on a host 10 minutes behind showed "up for 10 min"."""
    fields = {"queues": queues, "concurrency": concurrency, "pid": pid, "started_at": started_at,
              "seen_at": Now(), "stopped_at": None}
    this_run_stopped = Q(started_at=started_at, stopped_at__isnull=False)
    newer_run_up = Q(started_at__gt=started_at, stopped_at__isnull=True,
                     seen_at__gte=Now() - timedelta(seconds=LOST_AFTER_SECONDS))
    # A run that takes the row over (a restart's first beat; an older run's once the newer one is
    # gone) is up since this beat; the row's own run keeps the time of its first.
    up_since = Case(When(started_at=started_at, then=F("up_since")), default=Now())
    # One conditional UPDATE: a mark or a newer run's beat that commits while it waits for the
    # row is seen.
    reported = (WorkerHeartbeat.objects.filter(hostname=hostname).exclude(this_run_stopped | newer_run_up)
                .update(**fields, up_since=up_since))
    if not reported:
        # No row yet (made here), this run's stopped one or a newer run's (left as they are).
        WorkerHeartbeat.objects.get_or_create(hostname=hostname, defaults={**fields, "up_since": Now()})
    WorkerHeartbeat.objects.filter(seen_at__lt=Now() - FORGET_AFTER).delete()


def worker_stopped(*, hostname: str, started_at: datetime) -> None:
    """Mark the worker run that started at `started_at` as shut down cleanly, by the database's
    clock (worker_seen). Another run of the same hostname (a restarted container reusing its
    name while this one shuts down, or two hosts named alike) may have taken the row over: that
    run is still up, so its row is left as it is."""
    WorkerHeartbeat.objects.filter(hostname=hostname, started_at=started_at).update(seen_at=Now(), stopped_at=Now())
