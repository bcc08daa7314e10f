"""An endpoint deleted while one of its client's events is being recorded: the event's transaction
still commits (with no delivery to the endpoint gone), and no delivery of it is left pending
without its endpoint, to go to its URL signed with the client's secret instead of the
endpoint's."""
from __future__ import annotations

import uuid

import pytest
from django.db import transaction

from core.models import Client
from core.services import client_create
from tests.locks import meanwhile
from webhooks import endpoints, outbox
from webhooks.models import Delivery, Endpoint, Event

pytestmark = pytest.mark.django_db(transaction=True)

RECEIVER = "http://127.0.0.1:9/hooks"


@pytest.fixture
def owner() -> Client:
    return client_create(name=f"delete-race-{uuid.uuid4().hex[:8]}")


def _job_event_recorded(owner: Client, subscribed: list[Endpoint]) -> Event:
    """What a job's transition does: record its event for the endpoints it read as subscribed,
    in its own transaction."""
    with transaction.atomic():
        return outbox.event_record(
            owner_id=owner.id, subject_id=uuid.uuid4(), event_type="job.succeeded", data={"n": 1},
            endpoints=subscribed, publish=False,
        )


def test_an_endpoint_deleted_after_its_subscribers_were_read_leaves_the_event_recorded(owner: Client) -> None:
    # Given a job's transition that has read the endpoint as subscribed
    endpoint = endpoints.endpoint_create(owner_id=owner.id, url=RECEIVER, event_types=["job.succeeded"])
    subscribed = endpoints.subscribers(owner_id=owner.id, event_type="job.succeeded")
    assert [e.pk for e in subscribed] == [endpoint.pk]

    # When the client deletes the endpoint before the transition records its event
    endpoints.endpoint_delete(owner_id=owner.id, endpoint_id=endpoint.pk)
    event = _job_event_recorded(owner, subscribed)

    # Then the transition commits, its event recorded with no delivery to the endpoint gone
    assert Event.objects.filter(pk=event.pk).exists()
    assert not Delivery.objects.filter(event_id=event.pk).exists()


def test_an_event_recorded_while_its_endpoint_is_deleted_leaves_no_delivery_pending_without_it(
    owner: Client,
) -> None:
    # Given an endpoint whose deletion has cancelled its pending deliveries but not yet deleted it
    endpoint = endpoints.endpoint_create(owner_id=owner.id, url=RECEIVER, event_types=["job.succeeded"])
    subscribed = endpoints.subscribers(owner_id=owner.id, event_type="job.succeeded")

    # When a job's transition records its event just after the deletion cancelled the endpoint's
    # deliveries, in a transaction of its own
    with meanwhile(lambda: _job_event_recorded(owner, subscribed), at='UPDATE "webhooks_delivery"',
                   after=True) as recorded:
        endpoints.endpoint_delete(owner_id=owner.id, endpoint_id=endpoint.pk)

    # Then the transition committed, and nothing of it is left pending without its endpoint (to
    # go to the deleted endpoint's URL signed with the client's own secret)
    assert len(recorded) == 1 and isinstance(recorded[0], Event), recorded
    assert list(Delivery.objects.filter(owner=owner, state=Delivery.State.PENDING).values_list("endpoint", "url")) == []

