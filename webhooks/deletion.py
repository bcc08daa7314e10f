"""A client's webhooks stopped as its batched deletion starts (jobs/deletion.py, told by
core.signals): nothing more goes to its receivers while the deletion deletes what it owns,
which takes minutes for a big client."""
from __future__ import annotations

import uuid

from django.db.models import F
from django.utils import timezone

from webhooks.models import Delivery, Endpoint

# Deliveries a statement of owner_deliveries_stop cancels: a big client's backlog (a receiver down
# for days) is canceled in short statements, not one that holds them all.
CANCEL_BATCH_ROWS = 2_000

State = Delivery.State


def owner_deliveries_stop(*, owner_id: uuid.UUID, batch_rows: int = CANCEL_BATCH_ROWS) -> int:
    """Disable the owner's endpoints and cancel its deliveries not yet delivered; how many were
    canceled. A disabled endpoint gets no delivery of an event recorded after (its subscribers
    are the enabled ones), and a delivery to it is held, not sent, when claimed; a canceled
    delivery is never claimed, and one whose attempt is in flight stays canceled unless the
    receiver answered it 2xx (webhooks/recording.py), as when its endpoint is deleted. Without
    this, the client's deliveries went on being sent, its endpoints receiving its jobs' events,
    until the batches reached them, minutes after the operator decided to delete it.

    The endpoints keep no disabled_reason: they are deleted within the deletion, and no client
    reads them meanwhile (its keys are revoked); none of the API's reasons says this one."""
    now = timezone.now()
    Endpoint.objects.filter(owner_id=owner_id, enabled=True).update(
        # A rescheduling under way stops at its next batch (webhooks/reschedule.py).
        enabled=False, disabled_at=now, next_slot_at=None, schedule_version=F("schedule_version") + 1,
    )
    # The processes' remembered subscriptions need not be forgotten: they are read again with
    # enabled=True (endpoints.subscribers_cached).
    canceled = 0
    waiting = Delivery.objects.filter(owner_id=owner_id, state__in=[State.PENDING, State.ENDPOINT_DISABLED])
    while count := waiting.filter(pk__in=waiting.order_by("pk").values("pk")[:batch_rows]).update(
        state=State.CANCELED, next_attempt_at=None, finished_at=now,
    ):
        canceled += count
    return canceled
