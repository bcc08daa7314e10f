"""An endpoint deleted while one of its client's events is being recorded: the event's transaction
still commits (with no delivery to the endpoint gone), and no delivery of it is left pending
without its endpoint, to go to its URL signed with the client's secret instead of the
endpoint's. Deleted while an attempt to it is in flight: a 2xx is recorded as succeeded (the
receiver got it), anything else leaves the delivery canceled, with no retry. Deleted as its
secret is read or rotated, or as it is changed or recovered: 404, as once it is gone."""
from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.db import transaction

from core.models import Client
from core.services import client_create
from examples.receiver import Receiver, Reply
from tests.conftest import Api
from tests.locks import meanwhile
from webhooks import attempts, claims, endpoints, outbox, sending
from webhooks.models import Delivery, DeliveryAttempt, Endpoint, Event, SigningSecret

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



@pytest.mark.parametrize(("status", "state"), [(200, Delivery.State.SUCCEEDED), (500, Delivery.State.CANCELED)])
def test_an_endpoint_deleted_while_an_attempt_to_it_is_in_flight(
    owner: Client, make_receiver: Callable[..., Receiver], status: int, state: str
) -> None:
    # Given a delivery to an endpoint
    receiver = make_receiver(Reply(status=status))
    endpoint = endpoints.endpoint_create(owner_id=owner.id, url=receiver.url, event_types=["job.succeeded"])
    event = _job_event_recorded(owner, [endpoint])
    delivery = Delivery.objects.get(event=event)

    # When its client deletes the endpoint while the attempt is in flight: answered, its outcome
    # not yet recorded
    with meanwhile(lambda: endpoints.endpoint_delete(owner_id=owner.id, endpoint_id=endpoint.pk),
                   at="UPDATE webhooks_deliveryattempt") as deleted:
        attempts.deliveries_attempt(delivery_ids=[delivery.pk])

    # Then the attempt shows the receiver's answer, and the delivery agrees with it: succeeded
    # on a 2xx; otherwise canceled, with nothing more to send to an endpoint that is gone
    assert deleted == [None] and not Endpoint.objects.filter(pk=endpoint.pk).exists()
    assert len(receiver.received) == 1
    assert list(DeliveryAttempt.objects.filter(delivery=delivery).values_list("status_code", flat=True)) == [status]
    delivery.refresh_from_db()
    assert (delivery.state, delivery.next_attempt_at, delivery.claim_token) == (state, None, None)
    assert delivery.finished_at is not None


def test_an_endpoint_deleted_while_its_delivery_waits_for_a_place_leaves_it_canceled(owner: Client) -> None:
    # Given a delivery claimed for an attempt, its endpoint deleted meanwhile
    endpoint = endpoints.endpoint_create(owner_id=owner.id, url=RECEIVER, event_types=["job.succeeded"])
    delivery = Delivery.objects.get(event=_job_event_recorded(owner, [endpoint]))
    (claimed,) = claims.claim(scope=claims.Scope(delivery_ids=[delivery.pk]), token=(token := uuid.uuid4()))
    endpoints.endpoint_delete(owner_id=owner.id, endpoint_id=endpoint.pk)

    # When the batch finds no place of its client's share for it, and puts it back unsent
    share = sending.host_share(owner.id, RECEIVER)
    sending.deliveries_put_back(unsent=[(claimed, sending.Unsent(share, 1))], token=token)

    # Then it stays canceled, due never
    delivery.refresh_from_db()
    assert (delivery.state, delivery.next_attempt_at) == (Delivery.State.CANCELED, None)


@pytest.mark.usefixtures("claim_implementation")
def test_an_endpoint_deleted_before_its_first_secret_is_made_closes_the_attempt_its_claim_opened(
    owner: Client, receiver: Receiver
) -> None:
    # Given a delivery to an endpoint without a signing secret (an operator deleted it in the
    # admin: the endpoint's next delivery makes one), and another of the client's to its
    # callback URL, in one batch
    endpoint = endpoints.endpoint_create(owner_id=owner.id, url=receiver.url, event_types=["job.succeeded"])
    SigningSecret.objects.filter(endpoint=endpoint).delete()
    doomed = Delivery.objects.get(event=_job_event_recorded(owner, [endpoint]))
    with transaction.atomic():
        other = Delivery.objects.get(event=outbox.event_record(
            owner_id=owner.id, subject_id=uuid.uuid4(), event_type="job.succeeded", data={"n": 2},
            callback_url=receiver.url, publish=False,
        ))

    # When its client deletes the endpoint once the batch has claimed it, before its secret is made
    with meanwhile(lambda: endpoints.endpoint_delete(owner_id=owner.id, endpoint_id=endpoint.pk),
                   at='INSERT INTO "webhooks_signingsecret"') as deleted:
        outcomes = attempts.deliveries_attempt(delivery_ids=[doomed.pk, other.pk])

    # Then the rest of the batch went out, and the delivery left out stays canceled, released by
    # its claim, with the attempt its claim opened closed as not sent (it stayed open, in flight
    # for ever in the delivery log)
    assert deleted == [None]
    assert [o.delivery_id for o in outcomes] == [other.pk]
    assert [r.headers["webhook-id"] for r in receiver.received] == [other.event.message_id]
    doomed.refresh_from_db()
    assert (doomed.state, doomed.next_attempt_at, doomed.claim_token, doomed.claimed_until) == (
        Delivery.State.CANCELED, None, None, None
    )
    (attempt,) = DeliveryAttempt.objects.filter(delivery=doomed)
    assert attempt.finished_at is not None
    assert (attempt.status_code, attempt.error) == (None, claims.LEFT_OUT_ENDPOINT_DELETED)


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "secret/", {}), ("POST", "secret/rotate/", {}), ("PATCH", "", {"enabled": False}),
    ("POST", "recover/", {"since": "2026-01-01T00:00:00Z"}),
])
def test_an_endpoint_deleted_as_its_secret_is_read_or_rotated_or_it_is_changed_or_recovered_is_not_found(
    make_api: Callable[..., Api], monkeypatch: pytest.MonkeyPatch, method: str, path: str, body: dict[str, Any]
) -> None:
    # Given an endpoint (with its secret)
    api = make_api()
    created = api.post("/api/webhook-endpoints/", json={"url": RECEIVER})
    assert created.status_code == 201, created.text
    endpoint_id = created.json()["id"]

    # When it is deleted, its secret with it (its client's other request), once the request
    # has found it (each time: a view's look and then its service's find the row they read)
    found, read = endpoints.endpoint_get, []

    def deleted_meanwhile(**kwargs: Any) -> Endpoint:
        read[:] = read or [found(**kwargs)]
        Endpoint.objects.filter(pk=read[0].pk).delete()
        return read[0]

    monkeypatch.setattr(endpoints, "endpoint_get", deleted_meanwhile)
    response = api.request(method, f"/api/webhook-endpoints/{endpoint_id}/{path}", json=body)

    # Then it is not found, as it would be a moment later (it was a 500: the secret made again,
    # or rotated, failed on the endpoint's foreign key; a change or a recover found no row to
    # lock), and no secret is left of it
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "not_found"
    assert not SigningSecret.objects.filter(endpoint_id=endpoint_id).exists()



@pytest.mark.parametrize(("status", "state"), [(200, Delivery.State.SUCCEEDED), (500, Delivery.State.CANCELED)])
def test_an_endpoint_deleted_while_its_attempts_outcome_is_recorded(
    owner: Client, make_receiver: Callable[..., Receiver], status: int, state: str
) -> None:
    # Given a delivery to an endpoint whose attempt is answered
    receiver = make_receiver(Reply(status=status))
    endpoint = endpoints.endpoint_create(owner_id=owner.id, url=receiver.url, event_types=["job.succeeded"])
    delivery = Delivery.objects.get(event=_job_event_recorded(owner, [endpoint]))

    # When its client deletes the endpoint as the outcome is recorded: the delivery moved on, the
    # endpoint's health not yet (the deletion took the endpoint, then waited for the delivery,
    # while the recording waited for the endpoint: PostgreSQL aborted the deletion, a 500)
    with meanwhile(lambda: endpoints.endpoint_delete(owner_id=owner.id, endpoint_id=endpoint.pk),
                   at='UPDATE "webhooks_endpoint"') as deleted:
        attempts.deliveries_attempt(delivery_ids=[delivery.pk])

    # Then both are done: the endpoint is gone, the delivery succeeded or, with nothing more to
    # send to an endpoint that is gone, canceled
    assert deleted == [None] and not Endpoint.objects.filter(pk=endpoint.pk).exists()
    delivery.refresh_from_db()
    assert (delivery.state, delivery.next_attempt_at) == (state, None)
