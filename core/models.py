"""Clients (the owners of jobs, results and deliveries) and their API keys."""
from __future__ import annotations

import uuid

from django.db import models


class Client(models.Model):
    """Whoever holds API keys: owns jobs, results, deliveries and a webhook signing secret."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # The operator's overrides of the limits every client shares (core/limits.py): empty (NULL)
    # keeps the setting's value, 0 lifts the limit as the setting's 0 does. Read with the API
    # key (core/auth.py), so they cost a request no query, and apply within API_KEY_CACHE_SECONDS.
    submit_rate_per_minute = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="Jobs submitted per minute (a batch counts each of its jobs) before 429; 0: no limit. "
        "Empty: API_SUBMIT_RATE_PER_MINUTE.",
    )
    read_rate_per_minute = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="Reads (GET requests) per minute before 429; 0: no limit. Empty: API_READ_RATE_PER_MINUTE.",
    )
    max_unfinished_jobs = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="Jobs not final yet (pending, running) at once before submissions get 429; 0: no cap. "
        "Empty: JOB_MAX_UNFINISHED_PER_CLIENT.",
    )
    model_tokens_per_day = models.PositiveBigIntegerField(
        null=True, blank=True,
        help_text="Model tokens (the provider's usage.total_tokens) its jobs may spend per UTC day; "
        "0: no budget. Empty: MODEL_TOKENS_PER_CLIENT_PER_DAY.",
    )

    # DRF treats the authenticated principal as request.user; a Client is always authenticated.
    is_authenticated = True
    is_anonymous = False

    def __str__(self) -> str:
        return self.name


class ApiKey(models.Model):
    """A bearer key; only its SHA-256 digest is stored, so a leaked table leaks no usable key."""

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="api_keys")
    # Hex SHA-256 of the key: a key is 256 bits of randomness, so a fast hash is enough
    # and a check costs one indexed lookup instead of a password hasher's ~100 ms.
    digest = models.CharField(max_length=64, unique=True)
    # The first characters of the key, shown in the admin to tell keys apart.
    prefix = models.CharField(max_length=16)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.client})"
