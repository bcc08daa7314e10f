"""Clients' signing secrets: made on first use, rotated with an overlap in which deliveries
carry both signatures."""
from __future__ import annotations

import uuid
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from webhooks import signing
from webhooks.models import SigningSecret


def signing_secret_current(*, owner_id: uuid.UUID) -> str | None:
    return (
        SigningSecret.objects.filter(owner_id=owner_id, expires_at__isnull=True)
        .values_list("secret", flat=True)
        .first()
    )


def signing_secret_get_or_create(*, owner_id: uuid.UUID) -> str:
    """The client's current secret, made on first use."""
    current = signing_secret_current(owner_id=owner_id)
    if current is not None:
        return current
    try:
        with transaction.atomic():
            return SigningSecret.objects.create(owner_id=owner_id, secret=signing.secret_generate()).secret
    except IntegrityError:  # a concurrent first use made it: one current secret per client
        current = signing_secret_current(owner_id=owner_id)
        assert current is not None
        return current


def signing_secret_rotate(*, owner_id: uuid.UUID) -> str:
    """Make a new current secret; the old one keeps signing for WEBHOOK_SECRET_OVERLAP_SECONDS."""
    now = timezone.now()
    with transaction.atomic():
        # Locking the current row serialises concurrent rotations of one client.
        old = list(
            SigningSecret.objects.select_for_update().filter(owner_id=owner_id, expires_at__isnull=True)
        )
        SigningSecret.objects.filter(pk__in=[secret.pk for secret in old]).update(
            expires_at=now + timedelta(seconds=settings.WEBHOOK_SECRET_OVERLAP_SECONDS)
        )
        new = SigningSecret.objects.create(owner_id=owner_id, secret=signing.secret_generate())
    return new.secret
