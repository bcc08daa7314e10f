"""Signing secrets, a client's (for its jobs' callback_url deliveries) and each endpoint's: made
on first use, rotated with an overlap in which deliveries carry two signatures (the current
secret's and the previous one's, never more), pruned once expired."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from core.services import client_lock
from webhooks import signing
from webhooks.models import SigningSecret


class SecretOwnerGone(ObjectDoesNotExist):
    """The client (or endpoint) a secret was to be made for was deleted meanwhile. An
    ObjectDoesNotExist, as the row it needed is: a request whose client is gone is then refused
    as an unknown key (core.auth.client_writes), not answered 500."""


def _of(owner_id: uuid.UUID, endpoint_id: uuid.UUID | None) -> dict[str, object]:
    return {"owner_id": owner_id, "endpoint_id": endpoint_id} if endpoint_id else {
        "owner_id": owner_id, "endpoint__isnull": True,
    }


def signing_secret_current(*, owner_id: uuid.UUID, endpoint_id: uuid.UUID | None = None) -> str | None:
    return (
        SigningSecret.objects.filter(**_of(owner_id, endpoint_id), expires_at__isnull=True)
        .values_list("secret", flat=True)
        .first()
    )


def signing_secrets_in_use(*, owner_id: uuid.UUID, endpoint_id: uuid.UUID | None, now: datetime) -> list[str]:
    """The secrets that sign a delivery now: the current one first, then a rotated-out one still
    inside its overlap (webhooks/sql.py reads the same in its claim)."""
    return list(
        SigningSecret.objects.filter(**_of(owner_id, endpoint_id))
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .order_by(F("expires_at").asc(nulls_first=True), "-created_at", "-pk")
        .values_list("secret", flat=True)
    )


def signing_secret_get_or_create(*, owner_id: uuid.UUID, endpoint_id: uuid.UUID | None = None) -> str:
    """The current secret of the client (or of its endpoint), made on first use. Raises
    SecretOwnerGone when the client or endpoint no longer exists (its deletion committed while
    a delivery of it was being claimed)."""
    current = signing_secret_current(owner_id=owner_id, endpoint_id=endpoint_id)
    if current is not None:
        return current
    try:
        with transaction.atomic():
            return SigningSecret.objects.create(
                owner_id=owner_id, endpoint_id=endpoint_id, secret=signing.secret_generate()
            ).secret
    except IntegrityError:
        # A concurrent first use made it (one current secret each), or the owner's row is gone:
        # its foreign key failed.
        current = signing_secret_current(owner_id=owner_id, endpoint_id=endpoint_id)
        if current is None:
            raise SecretOwnerGone(f"client {owner_id}, endpoint {endpoint_id}") from None
        return current


def signing_secret_rotate(
    *, owner_id: uuid.UUID, endpoint_id: uuid.UUID | None = None, expire_previous_now: bool = False
) -> str:
    """Make a new current secret. The one it replaces keeps signing for
    WEBHOOK_SECRET_OVERLAP_SECONDS, or not at all with `expire_previous_now` (a leaked secret);
    an older one still in its overlap stops now, so at most two secrets ever sign. Raises
    SecretOwnerGone when the client or endpoint no longer exists (deleted since it was looked up)."""
    now = timezone.now()
    overlap = timedelta(seconds=0 if expire_previous_now else settings.WEBHOOK_SECRET_OVERLAP_SECONDS)
    scope = _of(owner_id, endpoint_id)
    try:
        with transaction.atomic():
            # The client's lock serialises concurrent rotations. (Locking the current row would
            # not: a second rotation waiting on it reads it again once the first commits, finds
            # it expired, and makes a second current secret.)
            client_lock(client_id=owner_id)
            old = list(SigningSecret.objects.filter(**scope, expires_at__isnull=True))
            SigningSecret.objects.filter(**scope, expires_at__gt=now).update(expires_at=now)
            SigningSecret.objects.filter(pk__in=[secret.pk for secret in old]).update(expires_at=now + overlap)
            new = SigningSecret.objects.create(
                owner_id=owner_id, endpoint_id=endpoint_id, secret=signing.secret_generate()
            )
    except IntegrityError:
        # Its owner's row gone (its foreign key failed), with its secrets: else it was not that.
        if signing_secret_current(owner_id=owner_id, endpoint_id=endpoint_id) is None:
            raise SecretOwnerGone(f"client {owner_id}, endpoint {endpoint_id}") from None
        raise
    return new.secret


def signing_secrets_prune(*, now: datetime | None = None) -> int:
    """Delete the secrets whose overlap has ended; how many went."""
    deleted, _ = SigningSecret.objects.filter(expires_at__lte=now or timezone.now()).delete()
    return deleted
