"""Clients' signing secrets: made on first use, rotated with an overlap in which deliveries carry
two signatures (the current secret's and the previous one's, never more), pruned once expired."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta

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


def signing_secret_rotate(*, owner_id: uuid.UUID, expire_previous_now: bool = False) -> str:
    """Make a new current secret. The one it replaces keeps signing for
    WEBHOOK_SECRET_OVERLAP_SECONDS, or not at all with `expire_previous_now` (a leaked secret);
    an older one still in its overlap stops now, so at most two secrets ever sign."""
    now = timezone.now()
    overlap = timedelta(seconds=0 if expire_previous_now else settings.WEBHOOK_SECRET_OVERLAP_SECONDS)
    with transaction.atomic():
        # Locking the current row serialises concurrent rotations of one client.
        old = list(
            SigningSecret.objects.select_for_update().filter(owner_id=owner_id, expires_at__isnull=True)
        )
        SigningSecret.objects.filter(owner_id=owner_id, expires_at__gt=now).update(expires_at=now)
        SigningSecret.objects.filter(pk__in=[secret.pk for secret in old]).update(expires_at=now + overlap)
        new = SigningSecret.objects.create(owner_id=owner_id, secret=signing.secret_generate())
    return new.secret


def signing_secrets_prune(*, now: datetime | None = None) -> int:
    """Delete the secrets whose overlap has ended; how many went."""
    deleted, _ = SigningSecret.objects.filter(expires_at__lte=now or timezone.now()).delete()
    return deleted
