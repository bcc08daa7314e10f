"""The Celery workers as they last reported themselves (console/heartbeats.py): a row each,
kept past a restart, so a worker that vanished shows as lost rather than not at all."""
from __future__ import annotations

from django.db import models


class WorkerHeartbeat(models.Model):
    # Celery's node name, "<WORKER_NAME>@<host>".
    hostname = models.CharField(max_length=255, unique=True)
    # The queues it consumes.
    queues = models.JSONField(default=list)
    concurrency = models.PositiveIntegerField(default=0)
    pid = models.PositiveIntegerField(default=0)
    # When its run started, by its host's clock: names the run (console/services.py).
    started_at = models.DateTimeField()
    # When the database recorded the run's first beat, by the database's clock: the console's
    # "up for". NULL only in a row of a run that started before it was kept.
    up_since = models.DateTimeField(null=True, blank=True)
    seen_at = models.DateTimeField()
    # Set when it shut down cleanly; a worker that stopped reporting without it was lost.
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["seen_at"], name="worker_seen")]

    def __str__(self) -> str:
        return self.hostname
