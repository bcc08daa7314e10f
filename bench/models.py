"""The baseline's one table: a row shaped like a small job (uuid key, JSON payload)."""
from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone


class BenchRow(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)
