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
    started_at = models.DateTimeField()
    seen_at = models.DateTimeField()
    # Set when it shut down cleanly; a worker that stopped reporting without it was lost.
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["seen_at"], name="worker_seen")]

    def __str__(self) -> str:
        return self.hostname
