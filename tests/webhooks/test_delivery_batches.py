"""Deliveries travel in batches: one task sends a batch side by side, recording each delivery's
own outcome; events recorded in one transaction are each delivered once."""
from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone

from core.models import Client
from core.services import client_create, client_delete
from examples.receiver import Receiver, Reply
from tests.webhooks.conftest import until
from webhooks import attempts, claims, dispatch, outbox, secrets
from webhooks.models import Delivery, DeliveryAttempt

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("claim_implementation")]


@pytest.fixture
def owner() -> Client:
    return client_create(name=f"batches-{uuid.uuid4().hex[:8]}")


def record(owner: Client, url: str, *, publish: bool = True, subject_id: uuid.UUID | None = None) -> Delivery:
    event = outbox.event_record(
        owner_id=owner.id,
        subject_id=subject_id or uuid.uuid4(),
        event_type="job.succeeded",
        data={"n": uuid.uuid4().hex},
        callback_url=url,
        publish=publish,
    )
    return Delivery.objects.get(event=event)


def test_events_recorded_in_one_transaction_are_each_delivered_once(
    owner: Client, receiver: Receiver, celery_worker: str
) -> None:
    # Given more events in one transaction than one message carries
    count = dispatch.BATCH_MAX_DELIVERIES * 2 + 5
    with transaction.atomic():
        deliveries = [record(owner, receiver.url) for _ in range(count)]

    # When the worker has sent them
    received = receiver.wait_for(count)

    # Then every event arrived exactly once and every delivery is final after one attempt (once
    # the worker has recorded its last batch: the receiver has the requests a moment before)
    assert sorted(r.headers["webhook-id"] for r in received) == sorted(
        d.event.message_id for d in deliveries
    )

    def outcomes() -> set[tuple[str, int]]:
        return set(Delivery.objects.filter(pk__in=[d.pk for d in deliveries]).values_list("state", "attempt_count"))

    until(lambda: Delivery.State.PENDING not in {state for state, _ in outcomes()}, what="the outcomes recorded")
    assert outcomes() == {(Delivery.State.SUCCEEDED, 1)}


def test_an_event_rolled_back_with_its_savepoint_leaves_the_others_sent(
    owner: Client, receiver: Receiver, celery_worker: str
) -> None:
    # Given a transaction whose middle event is rolled back with its savepoint
    with transaction.atomic():
        first = record(owner, receiver.url)
        try:
            with transaction.atomic():
                record(owner, receiver.url)
                raise RuntimeError("the caller changed its mind")
        except RuntimeError:
            pass
        last = record(owner, receiver.url)

    # Then the two that committed are delivered, and nothing else
    received = receiver.wait_for(2)
    assert sorted(r.headers["webhook-id"] for r in received) == sorted(
        [first.event.message_id, last.event.message_id]
    )
    assert Delivery.objects.filter(owner=owner).count() == 2


def test_a_batch_records_each_deliverys_own_outcome(
    owner: Client, make_receiver: Callable[..., Receiver]
) -> None:
    # Given three deliveries in one batch: one receiver takes it, one fails, one is Gone
    took, failed, gone = (make_receiver(Reply(status=status)) for status in (200, 500, 410))
    deliveries = [record(owner, r.url, publish=False) for r in (took, failed, gone)]

    # When one task sends the batch
    outcomes = attempts.deliveries_attempt(delivery_ids=[d.pk for d in deliveries])

    # Then each attempt is logged with its own answer, and each delivery moved on its own way
    assert sorted((a.delivery_id, a.status_code) for a in outcomes) == sorted(
        zip([d.pk for d in deliveries], [200, 500, 410], strict=True)
    )
    states = {d.pk: d for d in Delivery.objects.filter(pk__in=[d.pk for d in deliveries])}
    took_row, failed_row, gone_row = (states[d.pk] for d in deliveries)
    assert took_row.state == Delivery.State.SUCCEEDED and took_row.finished_at is not None
    assert failed_row.state == Delivery.State.PENDING and failed_row.next_attempt_at is not None
    assert gone_row.state == Delivery.State.FAILED and gone_row.next_attempt_at is None
    assert all(row.claim_token is None for row in states.values())
    assert DeliveryAttempt.objects.filter(delivery__in=deliveries, finished_at__isnull=True).count() == 0


def test_a_batch_leaves_out_what_another_worker_holds_or_what_is_not_due(
    owner: Client, receiver: Receiver
) -> None:
    # Given a batch where one delivery is claimed by a live worker and one is not due yet
    now = timezone.now()
    free = record(owner, receiver.url, publish=False)
    held = record(owner, receiver.url, publish=False)
    later = record(owner, receiver.url, publish=False)
    Delivery.objects.filter(pk=held.pk).update(claim_token=uuid.uuid4(), claimed_until=now + timedelta(minutes=1))
    Delivery.objects.filter(pk=later.pk).update(next_attempt_at=now + timedelta(hours=1))

    # When a task sends the batch
    outcomes = attempts.deliveries_attempt(delivery_ids=[free.pk, held.pk, later.pk])

    # Then only the free one was sent
    assert [a.delivery_id for a in outcomes] == [free.pk]
    assert [r.headers["webhook-id"] for r in receiver.received] == [free.event.message_id]
    assert Delivery.objects.get(pk=held.pk).attempt_count == 0
    assert Delivery.objects.get(pk=later.pk).attempt_count == 0


def test_a_jobs_chain_tail_sends_every_due_delivery_of_its_subject_and_no_other(
    owner: Client, make_receiver: Callable[..., Receiver]
) -> None:
    # Given more due deliveries of one subject than a batch holds, and another subject's
    receiver = make_receiver(secret=secrets.signing_secret_get_or_create(owner_id=owner.id))
    subject = uuid.uuid4()
    ours = [record(owner, receiver.url, publish=False, subject_id=subject) for _ in range(dispatch.BATCH_MAX_DELIVERIES + 3)]
    other = record(owner, receiver.url, publish=False)

    # When the tail of the subject's chain runs
    sent = attempts.deliveries_send_for_subject(subject_id=subject)

    # Then each of the subject's deliveries was sent once, signed with the owner's secret
    assert sent == len(ours)
    assert sorted(r.headers["webhook-id"] for r in receiver.received) == sorted(d.event.message_id for d in ours)
    assert all(r.verified for r in receiver.received)
    assert set(
        Delivery.objects.filter(subject_id=subject).values_list("state", "attempt_count")
    ) == {(Delivery.State.SUCCEEDED, 1)}
    # And the other subject's delivery was left for its own chain
    assert Delivery.objects.get(pk=other.pk).attempt_count == 0


def test_a_client_deleted_between_claim_and_signing_leaves_the_rest_of_the_batch_sent(
    owner: Client, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a batch with the first delivery of a client (no secret yet) and another client's
    doomed_client = client_create(name=f"doomed-{uuid.uuid4().hex[:8]}")
    doomed = record(doomed_client, receiver.url, publish=False)
    other = record(owner, receiver.url, publish=False)
    # and the doomed client deleted once its delivery is claimed, before its secret is made
    claim_rows = claims.claim_postgresql

    def claim_then_delete(**kwargs: Any) -> Any:
        rows = claim_rows(**kwargs)
        client_delete(client=doomed_client)
        return rows

    monkeypatch.setattr(claims, "claim_postgresql", claim_then_delete)

    # When a task sends the batch
    outcomes = attempts.deliveries_attempt(delivery_ids=[doomed.pk, other.pk])

    # Then the other client's delivery went out and was recorded; the deleted one's went with it
    assert [o.delivery_id for o in outcomes] == [other.pk]
    assert [r.headers["webhook-id"] for r in receiver.received] == [other.event.message_id]
    assert Delivery.objects.get(pk=other.pk).state == Delivery.State.SUCCEEDED
    assert not Delivery.objects.filter(pk=doomed.pk).exists()
