"""An endpoint disabled while one of its deliveries' attempts is in flight: the attempt's outcome
is still recorded by the worker that sent it. The disable's hold took the delivery from under its
claim, so a delivery the receiver had answered 2xx stayed held, and enabling the endpoint again
sent it a second time."""
from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from core import http
from core.models import Client
from core.services import client_create
from examples.receiver import Receiver
from webhooks import attempts, endpoints, outbox, reschedule
from webhooks.claims import Claimed
from webhooks.models import Delivery, Endpoint

pytestmark = pytest.mark.django_db(transaction=True)

State = Delivery.State


@pytest.fixture
def owner() -> Client:
    return client_create(name=f"disable-in-flight-{uuid.uuid4().hex[:8]}")


def _client_sets(owner: Client, endpoint: Endpoint, *, enabled: bool) -> None:
    """The client's PATCH of `enabled`, and the rescheduling that follows it on a deliveries
    worker, each on a connection of its own."""

    def run() -> None:
        try:
            changed = endpoints.endpoint_update(owner_id=owner.pk, endpoint_id=endpoint.pk, enabled=enabled)
            reschedule.endpoint_reschedule(endpoint_id=endpoint.pk, version=changed.schedule_version,
                                           before=timezone.now())
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=30)


def test_an_attempt_in_flight_as_its_endpoint_is_disabled_is_recorded_and_not_sent_again(
    owner: Client, receiver: Receiver, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a delivery to an endpoint
    endpoint = endpoints.endpoint_create(owner_id=owner.pk, url=receiver.url, event_types=["job.succeeded"])
    with transaction.atomic():
        event = outbox.event_record(owner_id=owner.pk, subject_id=uuid.uuid4(), event_type="job.succeeded",
                                    data={"n": 1}, endpoints=[endpoint], publish=False)
    delivery = Delivery.objects.get(event=event)

    # When its client disables the endpoint (and the workers hold its deliveries) while a worker
    # has the delivery claimed and its attempt on the way to the receiver, which answers 200
    send = attempts._send

    def disabled_meanwhile(claimed: Claimed, resolver: Any) -> http.HttpResult:
        _client_sets(owner, endpoint, enabled=False)
        return send(claimed, resolver)

    monkeypatch.setattr(attempts, "_send", disabled_meanwhile)
    outcomes = attempts.deliveries_attempt(delivery_ids=[delivery.pk])
    assert [o.status_code for o in outcomes] == [200]
    assert len(receiver.wait_for(1)) == 1

    # Then the delivery is recorded as delivered, not held behind the endpoint
    assert Delivery.objects.get(pk=delivery.pk).state == State.SUCCEEDED

    # And enabling the endpoint again sends it no second time
    _client_sets(owner, endpoint, enabled=True)
    assert Delivery.objects.get(pk=delivery.pk).state == State.SUCCEEDED
