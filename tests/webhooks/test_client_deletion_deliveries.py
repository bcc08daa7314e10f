"""A client being deleted by batches (the client_delete command, many minutes for a big one):
nothing more is delivered to its receivers once its deletion starts. Its endpoints stayed
enabled and its deliveries pending until the batches reached them, so a worker sent the ones
that fell due meanwhile (signed with a secret made again: the secrets go first)."""
from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.test import Client as HttpClient
from django.utils import timezone

from core.models import Client
from core.services import api_key_create, client_create, client_delete_in_batches
from examples.receiver import Receiver
from webhooks import deletion, dispatch, endpoints, outbox
from webhooks.models import Delivery, Endpoint

pytestmark = pytest.mark.django_db(transaction=True)

DUE_IN_SECONDS = 3


def _deliveries_due_soon(owner: Client, receiver: Receiver, subscribed: list[Endpoint]) -> list[int]:
    """A job's event for its callback_url and `subscribed` at `receiver`, its deliveries due in
    DUE_IN_SECONDS (as a retry is) on a countdown message to the worker."""
    with transaction.atomic():
        event = outbox.event_record(owner_id=owner.pk, subject_id=uuid.uuid4(), event_type="job.succeeded",
                                    data={"n": 1}, callback_url=receiver.url, endpoints=subscribed, publish=False)
    ids = list(Delivery.objects.filter(event=event).values_list("pk", flat=True))
    Delivery.objects.filter(pk__in=ids).update(next_attempt_at=timezone.now() + timedelta(seconds=DUE_IN_SECONDS))
    dispatch.deliveries_publish(delivery_ids=ids, countdown=DUE_IN_SECONDS)
    return ids


def test_a_delivery_due_while_its_client_is_deleted_is_not_sent(receiver: Receiver, celery_worker: str) -> None:
    # Given a client with an endpoint at the receiver, and deliveries due in a few seconds to
    # it and to a job's callback_url there; and another client's delivery due at the same time
    owner = client_create(name=f"leaving-{uuid.uuid4().hex[:8]}")
    endpoint = endpoints.endpoint_create(owner_id=owner.pk, url=receiver.url, event_types=["job.succeeded"])
    leaving = _deliveries_due_soon(owner, receiver, [endpoint])
    other = client_create(name=f"staying-{uuid.uuid4().hex[:8]}")
    staying = _deliveries_due_soon(other, receiver, [])
    assert len(leaving) == 2
    seen_meanwhile: list[object] = []

    def held_past_the_due_time(kind: str, deleted: int) -> None:
        # The deletion goes on well past the deliveries' due time (a big client's takes minutes)
        if not seen_meanwhile:
            seen_meanwhile.append(endpoints.subscribers(owner_id=owner.pk, event_type="job.succeeded"))
            receiver.wait_for(1)  # the other client's delivery, sent when due
            time.sleep(DUE_IN_SECONDS)

    # When the operator deletes the client
    client_delete_in_batches(client=owner, batch_rows=1, progress=held_past_the_due_time)

    # Then the worker sent the other client's delivery, and none of the client's: its endpoint
    # was no subscriber once its deletion began; and the client is gone
    assert [r.headers["webhook-id"] for r in receiver.received] == list(
        Delivery.objects.filter(pk__in=staying).values_list("event__message_id", flat=True)
    )
    assert seen_meanwhile == [[]]
    assert not Client.objects.filter(pk=owner.pk).exists()
    assert not Delivery.objects.filter(pk__in=leaving).exists()


def test_stopping_a_clients_deliveries_disables_its_endpoints_and_cancels_what_waits() -> None:
    # Given a client's endpoint, a delivery to it and two to a callback_url, one already sent,
    # and another client's delivery
    owner = client_create(name=f"leaving-{uuid.uuid4().hex[:8]}")
    other = client_create(name=f"staying-{uuid.uuid4().hex[:8]}")
    endpoint = endpoints.endpoint_create(owner_id=owner.pk, url="http://127.0.0.1:9/hooks", event_types=["job.succeeded"])
    with transaction.atomic():
        for client, subscribed in ((owner, [endpoint]), (owner, []), (other, [])):
            outbox.event_record(owner_id=client.pk, subject_id=uuid.uuid4(), event_type="job.succeeded",
                                data={}, callback_url="http://127.0.0.1:9/cb", endpoints=subscribed, publish=False)
    sent = Delivery.objects.filter(owner=owner, endpoint__isnull=True).first()
    assert sent is not None
    Delivery.objects.filter(pk=sent.pk).update(state=Delivery.State.SUCCEEDED, next_attempt_at=None)

    # When its deliveries are stopped, a row a statement
    canceled = deletion.owner_deliveries_stop(owner_id=owner.pk, batch_rows=1)

    # Then its endpoint is disabled, the two waiting are canceled, the one sent stays succeeded,
    # and the other client's waits still
    assert canceled == 2
    endpoint.refresh_from_db()
    assert not endpoint.enabled and endpoint.disabled_at is not None and endpoint.disabled_reason == ""
    assert sorted(Delivery.objects.filter(owner=owner).values_list("state", flat=True)) == [
        Delivery.State.CANCELED, Delivery.State.CANCELED, Delivery.State.SUCCEEDED,
    ]
    assert not Delivery.objects.filter(owner=owner, state=Delivery.State.CANCELED, next_attempt_at__isnull=False).exists()
    assert list(Delivery.objects.filter(owner=other).values_list("state", flat=True)) == [Delivery.State.PENDING]


def test_an_endpoint_enabled_again_by_a_key_still_remembered_is_stopped_again(
    settings: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a client's endpoint, and an API process that checked the client's key a moment ago:
    # it goes on taking it for API_KEY_CACHE_SECONDS once revoked (another process: not told)
    settings.API_KEY_CACHE_SECONDS = 1.0
    monkeypatch.setattr("core.services.api_key_forget", lambda **kwargs: None)
    owner = client_create(name=f"leaving-{uuid.uuid4().hex[:8]}")
    browser = HttpClient(HTTP_AUTHORIZATION=f"Bearer {api_key_create(client=owner)}")
    endpoint = endpoints.endpoint_create(owner_id=owner.pk, url="http://127.0.0.1:9/hooks", event_types=["job.succeeded"])
    for _ in range(3):  # rows for batches before the endpoints'
        endpoints.endpoint_test(owner_id=owner.pk, endpoint_id=endpoint.pk)
    assert browser.get("/api/webhook-endpoints/").status_code == 200
    enabled_meanwhile: list[bool] = []

    def client_enables_it_again(kind: str, deleted: int) -> None:
        if not enabled_meanwhile:
            # Its client enables it again through that process, just after the deletion began
            changed = browser.patch(f"/api/webhook-endpoints/{endpoint.pk}/", {"enabled": True},
                                    content_type="application/json")
            assert changed.status_code == 200 and changed.json()["enabled"] is True
            time.sleep(settings.API_KEY_CACHE_SECONDS)
        enabled_meanwhile.append(Endpoint.objects.filter(pk=endpoint.pk, enabled=True).exists())

    # When the operator deletes the client, a row a batch
    client_delete_in_batches(client=owner, batch_rows=1, progress=client_enables_it_again)

    # Then the endpoint is disabled again once no process takes the key, before the batches go on
    assert enabled_meanwhile[:2] == [True, False]
    assert not Client.objects.filter(pk=owner.pk).exists()
