"""Signing secrets, a client's (for its jobs' callback_url deliveries) and each endpoint's: made
on first use, rotated with an overlap in which deliveries carry two signatures (the current
secret's and the previous one's, never more), pruned once expired. Stored sealed (encrypted
under a key derived from SECRET_KEY, webhooks/sealing.py): the API unseals the secret it shows
its client, a delivery those that sign it."""
from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from core.errors import ApplicationError
from core.services import client_lock
from webhooks import sealing, signing
from webhooks.models import SigningSecret

logger = logging.getLogger(__name__)


class SecretOwnerGone(ObjectDoesNotExist):
    """The client (or endpoint) a secret was to be made for was deleted meanwhile. An
    ObjectDoesNotExist, as the row it needed is: a request whose client is gone is then refused
    as an unknown key (core.auth.client_writes), not answered 500."""


class SecretUnreadable(ApplicationError):
    """A secret its client asked for that no key opens (webhooks/sealing.py): the operator's to
    fix, by putting the previous SECRET_KEY back among SECRET_KEY_FALLBACKS."""

    status_code = 500
    code = "signing_secret_unreadable"

    def __init__(self) -> None:
        super().__init__(
            "Your signing secret cannot be decrypted: the service's key changed. Tell its operator, or rotate "
            "the secret with expire_previous_now to have a new one."
        )


def _of(owner_id: uuid.UUID, endpoint_id: uuid.UUID | None) -> dict[str, object]:
    return {"owner_id": owner_id, "endpoint_id": endpoint_id} if endpoint_id else {
        "owner_id": owner_id, "endpoint__isnull": True,
    }


def _current_sealed(owner_id: uuid.UUID, endpoint_id: uuid.UUID | None) -> str | None:
    return (
        SigningSecret.objects.filter(**_of(owner_id, endpoint_id), expires_at__isnull=True)
        .values_list("secret", flat=True)
        .first()
    )


def signing_secrets_in_use(*, owner_id: uuid.UUID, endpoint_id: uuid.UUID | None, now: datetime) -> list[str]:
    """The secrets that sign a delivery now, sealed as stored: the current one first, then a
    rotated-out one still inside its overlap (webhooks/sql.py reads the same in its claim)."""
    return list(
        SigningSecret.objects.filter(**_of(owner_id, endpoint_id))
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .order_by(F("expires_at").asc(nulls_first=True), "-created_at", "-pk")
        .values_list("secret", flat=True)
    )


def signing_secret_get_or_create(*, owner_id: uuid.UUID, endpoint_id: uuid.UUID | None = None) -> str:
    """The current secret of the client (or of its endpoint), made on first use, for its client
    to read. Raises SecretOwnerGone when the client or endpoint no longer exists, and
    SecretUnreadable (an API error) when no key opens it."""
    try:
        return sealing.unseal(signing_secret_sealed_get_or_create(owner_id=owner_id, endpoint_id=endpoint_id))
    except sealing.SecretUnreadable as exc:
        logger.error("The signing secret of client %s (endpoint %s): %s", owner_id, endpoint_id, exc)
        raise SecretUnreadable() from None


def signing_secret_sealed_get_or_create(*, owner_id: uuid.UUID, endpoint_id: uuid.UUID | None = None) -> str:
    """The current secret of the client (or of its endpoint), sealed as stored, made on first
    use. Raises SecretOwnerGone when the client or endpoint no longer exists (its deletion
    committed while a delivery of it was being claimed)."""
    current = _current_sealed(owner_id, endpoint_id)
    if current is not None:
        return current
    try:
        with transaction.atomic():
            return SigningSecret.objects.create(
                owner_id=owner_id, endpoint_id=endpoint_id, secret=sealing.seal(signing.secret_generate())
            ).secret
    except IntegrityError:
        # A concurrent first use made it (one current secret each), or the owner's row is gone:
        # its foreign key failed.
        current = _current_sealed(owner_id, endpoint_id)
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
    secret = signing.secret_generate()
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
            SigningSecret.objects.create(owner_id=owner_id, endpoint_id=endpoint_id, secret=sealing.seal(secret))
    except IntegrityError:
        # Its owner's row gone (its foreign key failed), with its secrets: else it was not that.
        if _current_sealed(owner_id, endpoint_id) is None:
            raise SecretOwnerGone(f"client {owner_id}, endpoint {endpoint_id}") from None
        raise
    return secret


def signing_secrets_prune(*, now: datetime | None = None) -> int:
    """Delete the secrets whose overlap has ended; how many went."""
    deleted, _ = SigningSecret.objects.filter(expires_at__lte=now or timezone.now()).delete()
    return deleted


def signing_secrets_reencrypt() -> tuple[int, int]:
    """Seal every stored secret again under SECRET_KEY's key, the step of a rotation of
    SECRET_KEY that lets its previous value leave SECRET_KEY_FALLBACKS (docs/deployment.md):
    (how many were sealed again, how many no key opens). A row is rewritten only while it holds
    the token read (a secret never changes; a pruned one is gone)."""
    moved = unreadable = 0
    for pk, token in SigningSecret.objects.values_list("pk", "secret").iterator(chunk_size=1000):
        try:
            again = sealing.sealed_again(token)
        except sealing.SecretUnreadable:
            logger.error("Signing secret %s: no key opens it; left as it is", pk)
            unreadable += 1
            continue
        if again is not None:
            moved += SigningSecret.objects.filter(pk=pk, secret=token).update(secret=again)
    return moved, unreadable
