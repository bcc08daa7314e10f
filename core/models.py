"""Clients (the owners of jobs, results and deliveries) and their API keys."""
from __future__ import annotations

import uuid

from django.db import models


class Client(models.Model):
    """Whoever holds API keys: owns jobs, results, deliveries and a webhook signing secret."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

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
