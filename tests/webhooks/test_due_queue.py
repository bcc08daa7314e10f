"""Deliveries due at once go through the due queue: many events recorded one by one ask the
broker for one drain, a drain sends what the queue holds in batches, and nothing is lost when
the queue's Redis, the broker or the database fails."""
from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import structlog.testing
from celery.worker import state as worker_state
from django.db import DatabaseError
from django.utils import timezone
from redis.backoff import NoBackoff
from redis.retry import Retry

from core import cache_redis, http
from core.models import Client
from core.pause import PauseAfterFailure
from core.services import client_create
from examples.receiver import Receiver
from tests.conftest import Api, SilentServer, silent_server
from tests.webhooks.conftest import until
from tests.webhooks.test_endpoint_deliveries import endpoint_create
from webhooks import attempts, dispatch, outbox, sending
from webhooks.models import Delivery, DeliveryAttempt

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def owner() -> Client:
    return client_create(name=f"due-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def drains_asked(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[None]]:
    """Drains asked for are counted here instead of published, so the test drains in-process
    and the session's worker stays out of it; the flag and the queue are the real ones."""
    asked: list[None] = []
    monkeypatch.setattr(dispatch, "_drain_publish", lambda: asked.append(None))
    client = cache_redis.queue_client()
    queue, flag = dispatch._due_keys()
    client.delete(queue, flag)  # the queue as this test fills it, nothing an earlier test left
    yield asked
    client.delete(flag)


def due_queue_through(monkeypatch: pytest.MonkeyPatch, client: redis.Redis) -> None:
    """This process's due queue through `client` (a Redis that refuses or hangs), with a pause of
    its own: one the test starts is not left to the next."""
    monkeypatch.setattr(cache_redis, "_queue_client", client)
    monkeypatch.setattr(dispatch, "_queue_pause", PauseAfterFailure(dispatch.QUEUE_RETRY_SECONDS))


def record(owner: Client, url: str) -> Delivery:
    event = outbox.event_record(owner_id=owner.id, subject_id=uuid.uuid4(), event_type="job.succeeded",
                                data={"n": uuid.uuid4().hex}, callback_url=url)
    return Delivery.objects.get(event=event)


def test_events_recorded_one_by_one_ask_for_one_drain_which_sends_them_all(
    owner: Client, receiver: Receiver, drains_asked: list[None]
) -> None:
    # Given 30 events recorded one transaction each, before any drain starts
    deliveries = [record(owner, receiver.url) for _ in range(30)]

    # Then one drain was asked for, not 30
    assert len(drains_asked) == 1

    # When it runs
    made = attempts.deliveries_drain()

    # Then every event arrived once, after one attempt each
    assert made == 30
    assert len(receiver.wait_for(30)) == 30
    assert set(Delivery.objects.filter(pk__in=[d.pk for d in deliveries]).values_list("state", "attempt_count")) == {
        (Delivery.State.SUCCEEDED, 1)
    }

    # And an event recorded after the drain started asks for the next one
    record(owner, receiver.url)
    assert len(drains_asked) == 2
    attempts.deliveries_drain()
    assert len(receiver.wait_for(31)) == 31


def test_a_drain_taking_full_batches_asks_another_to_join(
    owner: Client, receiver: Receiver, drains_asked: list[None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatch, "DRAIN_BATCH", 10)
    for _ in range(25):
        record(owner, receiver.url)
    assert len(drains_asked) == 1

    attempts.deliveries_drain()

    # Its first full batch asked for a second drain (the flag was clear: the drain had started);
    # the second found the flag set by then
    assert len(drains_asked) == 2
    assert len(receiver.wait_for(25)) == 25


def test_a_drain_hands_over_between_batches_once_its_worker_is_stopping(
    owner: Client, receiver: Receiver, drains_asked: list[None], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 25 due deliveries and a drain taking 10 a batch
    monkeypatch.setattr(dispatch, "DRAIN_BATCH", 10)
    deliveries = [record(owner, receiver.url) for _ in range(25)]
    sent_batch = attempts._attempt

    def warm_shutdown_during(**kwargs: object) -> list[attempts.AttemptOutcome]:
        outcomes = sent_batch(**kwargs)
        monkeypatch.setattr(worker_state, "should_stop", 0)  # SIGTERM: Celery's warm shutdown
        return outcomes

    monkeypatch.setattr(attempts, "_attempt", warm_shutdown_during)

    # When the worker begins its warm shutdown during the first batch
    made = attempts.deliveries_drain()

    # Then the drain finishes that batch and takes no other
    assert made == 10
    assert len(receiver.wait_for(10)) == 10
    # And the rest wait on the queue for the drain it asked for, on a worker that stays
    assert dispatch.due_waiting() == 15
    assert len(drains_asked) == 2  # the events', and the one the first full batch asked for
    monkeypatch.setattr(worker_state, "should_stop", None)
    monkeypatch.setattr(attempts, "_attempt", sent_batch)
    assert attempts.deliveries_drain() == 15
    assert len(receiver.wait_for(25)) == 25
    assert set(Delivery.objects.filter(pk__in=[d.pk for d in deliveries]).values_list("state", flat=True)) == {
        Delivery.State.SUCCEEDED
    }


def test_ids_whose_batch_the_database_refused_go_back_to_the_queue(
    owner: Client, receiver: Receiver, drains_asked: list[None], monkeypatch: pytest.MonkeyPatch
) -> None:
    deliveries = [record(owner, receiver.url) for _ in range(3)]

    def refused(**kwargs: object) -> list[object]:
        raise DatabaseError("the database went away")

    with monkeypatch.context() as patched:
        patched.setattr(attempts, "_attempt", refused)
        with pytest.raises(DatabaseError):
            attempts.deliveries_drain()

    # The task's retry finds them again
    assert attempts.deliveries_drain() == 3
    assert len(receiver.wait_for(3)) == 3
    assert set(Delivery.objects.filter(pk__in=[d.pk for d in deliveries]).values_list("state", flat=True)) == {
        Delivery.State.SUCCEEDED
    }


def test_ids_whose_batch_raised_anything_go_back_to_the_queue_and_are_sent_at_once(
    owner: Client, receiver: Receiver, drains_asked: list[None], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a batch holding two clients' deliveries, which raises something other than a
    # database error outside any one delivery's attempt (those are recorded as their own
    # outcome, tests/webhooks/test_sending.py): injected here, as the lanes' bookkeeping or a
    # task's soft time limit could
    other = client_create(name=f"due-{uuid.uuid4().hex[:8]}")
    deliveries = [record(owner, receiver.url), record(other, receiver.url)]

    def surprised(claims: object, send: object, finished: object) -> None:
        raise RuntimeError("a surprise outside the attempts")

    with monkeypatch.context() as patched:
        patched.setattr(sending, "send_batch", surprised)
        with pytest.raises(RuntimeError):
            attempts.deliveries_drain()

    # Then the ids are back on the queue, their claims given up: the next drain sends both at
    # once, not after the dispatcher's REDISPATCH_AFTER_SECONDS
    assert dispatch.due_waiting() == 2
    assert attempts.deliveries_drain() == 2
    assert len(receiver.wait_for(2)) == 2
    assert set(Delivery.objects.filter(pk__in=[d.pk for d in deliveries]).values_list("state", flat=True)) == {
        Delivery.State.SUCCEEDED
    }
    # And the batch that raised before sending them left no attempt in their logs, nor spent one
    # of their numbers: each shows the one attempt that went out
    assert list(DeliveryAttempt.objects.filter(delivery__in=deliveries).values_list("number", "status_code")) == [
        (1, 200), (1, 200)
    ]


def test_a_delivery_that_makes_its_batch_raise_fails_alone_and_is_given_up(
    owner: Client, receiver: Receiver, drains_asked: list[None], monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    # Given a batch of three clients' deliveries, one of which makes any batch holding it raise
    # outside the attempts (injected: as its data could trip the lanes' bookkeeping), and retries
    # left to this test: two attempts, the second an hour away (no countdown message for the
    # session's worker)
    settings.WEBHOOK_RETRY_SCHEDULE = [0, 3600]
    poisoned = record(owner, receiver.url)
    others = [record(client_create(name=f"due-{uuid.uuid4().hex[:8]}"), receiver.url) for _ in range(2)]
    send_batch = sending.send_batch

    def tripped(claims: list[Any], send: Any, finished: Any) -> None:
        if any(claimed.delivery_id == poisoned.pk for claimed in claims):
            raise RuntimeError("tripped by one delivery's data")
        send_batch(claims, send, finished)

    monkeypatch.setattr(sending, "send_batch", tripped)

    # When a drain sends them
    attempts.deliveries_drain()

    # Then the other clients' deliveries went out, once each, and are delivered
    assert sorted(r.headers["webhook-id"] for r in receiver.received) == sorted(d.event.message_id for d in others)
    assert set(Delivery.objects.filter(pk__in=[d.pk for d in others]).values_list("state", flat=True)) == {
        Delivery.State.SUCCEEDED
    }
    # And the poisoned one failed alone: its attempt recorded as an internal error (the batch's,
    # never sent, given back), its next one due on its schedule (not at every drain)
    poisoned.refresh_from_db()
    assert poisoned.state == Delivery.State.PENDING and poisoned.claim_token is None
    assert list(DeliveryAttempt.objects.filter(delivery=poisoned).values_list("number", "error")) == [
        (1, f"{attempts.SURPRISE}: RuntimeError")
    ]

    # And when its schedule's last attempt fails the same way, it is given up, with a WARNING
    # line naming it and why
    Delivery.objects.filter(pk=poisoned.pk).update(next_attempt_at=timezone.now(), dispatched_at=timezone.now())
    with structlog.testing.capture_logs() as lines:
        attempts.deliveries_attempt(delivery_ids=[poisoned.pk])
    poisoned.refresh_from_db()
    assert (poisoned.state, poisoned.next_attempt_at) == (Delivery.State.FAILED, None)
    [given_up] = [line for line in lines if line["event"] == "webhook deliveries given up"]
    assert (given_up["log_level"], given_up["delivery_id"], given_up["error"]) == (
        "warning", poisoned.pk, f"{attempts.SURPRISE}: RuntimeError"
    )


def test_a_batch_that_raises_after_some_attempts_went_out_sends_those_once(
    owner: Client, receiver: Receiver, drains_asked: list[None], monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    # Given a batch of three clients' deliveries, one of which makes any batch holding it raise
    # outside the attempts once the others' attempts went out (injected: as its data could trip
    # its lane while the other lanes send), and retries an hour away
    settings.WEBHOOK_RETRY_SCHEDULE = [0, 3600, 3600]
    poisoned = record(owner, receiver.url)
    others = [record(client_create(name=f"due-{uuid.uuid4().hex[:8]}"), receiver.url) for _ in range(2)]
    send_batch = sending.send_batch

    def tripped_after_the_others(claims: list[Any], send: Any, finished: Any) -> None:
        if all(claimed.delivery_id != poisoned.pk for claimed in claims):
            return send_batch(claims, send, finished)
        if len(claims) > 1:  # their answers came, and were not handed over before it raised
            send_batch([claimed for claimed in claims if claimed.delivery_id != poisoned.pk], send, lambda sent: None)
        raise RuntimeError("tripped by one delivery's data, the others sent")

    monkeypatch.setattr(sending, "send_batch", tripped_after_the_others)

    # When a drain sends them
    attempts.deliveries_drain()

    # Then the receiver got each of the others once: they went out before the batch raised and
    # were not sent again alone
    assert sorted(r.headers["webhook-id"] for r in receiver.received) == sorted(d.event.message_id for d in others)
    # And their logs show that one attempt, with its answer, and they are delivered
    assert list(DeliveryAttempt.objects.filter(delivery__in=others).values_list("number", "status_code", "error")) == [
        (1, 200, ""), (1, 200, "")
    ]
    assert set(Delivery.objects.filter(pk__in=[d.pk for d in others]).values_list("state", "attempt_count")) == {
        (Delivery.State.SUCCEEDED, 1)
    }
    # And the one at fault failed alone, its one attempt an internal error
    assert list(DeliveryAttempt.objects.filter(delivery=poisoned).values_list("number", "error")) == [
        (1, f"{attempts.SURPRISE}: RuntimeError")
    ]


def test_a_lane_that_raises_leaves_its_delivery_to_fail_alone_while_the_others_are_recorded(
    owner: Client, receiver: Receiver, drains_asked: list[None], monkeypatch: pytest.MonkeyPatch, settings: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a batch of three clients' deliveries, one of which trips its lane's own bookkeeping
    # before it is sent (injected: its endpoint's pace raising), while the other lanes send and
    # have their answers recorded as they come; retries an hour away
    settings.WEBHOOK_RETRY_SCHEDULE = [0, 3600, 3600]
    poisoned = record(owner, receiver.url)
    others = [record(client_create(name=f"due-{uuid.uuid4().hex[:8]}"), receiver.url) for _ in range(2)]
    turn_taken = sending._turn_taken

    def tripped(claimed: Any, **kwargs: Any) -> bool:
        if claimed.delivery_id == poisoned.pk:
            raise RuntimeError("tripped by one delivery's data")
        return turn_taken(claimed, **kwargs)

    monkeypatch.setattr(sending, "_turn_taken", tripped)

    # When a drain sends them
    with caplog.at_level(logging.WARNING, logger=attempts.logger.name):
        attempts.deliveries_drain()

    # Then the others went out once each and are delivered
    assert sorted(r.headers["webhook-id"] for r in receiver.received) == sorted(d.event.message_id for d in others)
    assert set(Delivery.objects.filter(pk__in=[d.pk for d in others]).values_list("state", "attempt_count")) == {
        (Delivery.State.SUCCEEDED, 1)
    }
    # And the one whose lane raised was not put back as one waiting for a place, the surprise
    # swallowed: the batch's raising is logged, and sent alone it failed alone, its attempt an
    # internal error retried on its schedule
    assert "A batch of 3 deliveries raised, 1 of them not sent; sending each of those alone" in caplog.messages
    poisoned.refresh_from_db()
    assert (poisoned.state, poisoned.claim_token) == (Delivery.State.PENDING, None)
    assert list(DeliveryAttempt.objects.filter(delivery=poisoned).values_list("number", "error")) == [
        (1, f"{attempts.SURPRISE}: RuntimeError")
    ]


def test_an_attempt_that_raised_after_going_out_is_not_sent_again_when_its_batch_raises(
    owner: Client, receiver: Receiver, drains_asked: list[None], monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    # Given a batch of two clients' deliveries, one of whose attempts raises once its request has
    # gone out (injected: core/http.py letting a surprise escape after the receiver answered),
    # after which the batch raises outside its attempts (injected, as in the test above), and
    # retries an hour away
    settings.WEBHOOK_RETRY_SCHEDULE = [0, 3600, 3600]
    raising = record(owner, receiver.url)
    other = record(client_create(name=f"due-{uuid.uuid4().hex[:8]}"), receiver.url)
    post, send_batch = http.post, sending.send_batch

    def post_then_raise(url: str, **kwargs: Any) -> http.HttpResult:
        result = post(url, **kwargs)
        if kwargs["resolve_for"] == owner.id:
            raise RuntimeError("after the request went out")
        return result

    def raising_once_sent(claims: list[Any], send: Any, finished: Any) -> None:
        if len(claims) == 1:
            return send_batch(claims, send, finished)
        send_batch(claims, send, lambda sent: None)  # their answers came, and were not handed over
        raise RuntimeError("the batch's bookkeeping, once its attempts went out")

    monkeypatch.setattr(http, "post", post_then_raise)
    monkeypatch.setattr(sending, "send_batch", raising_once_sent)

    # When a drain sends them
    attempts.deliveries_drain()

    # Then the receiver got each once: the attempt that raised had gone out, and was not sent
    # again as one never made
    assert sorted(r.headers["webhook-id"] for r in receiver.received) == sorted(
        d.event.message_id for d in (raising, other)
    )
    # And its log keeps that attempt, as its own error, retried on its schedule
    assert list(DeliveryAttempt.objects.filter(delivery=raising).values_list("number", "error")) == [
        (1, f"{attempts.SURPRISE}: RuntimeError")
    ]
    raising.refresh_from_db()
    assert (raising.state, raising.attempt_count, raising.claim_token) == (Delivery.State.PENDING, 1, None)


def test_the_dispatcher_asks_again_when_a_drain_message_was_lost(
    owner: Client, receiver: Receiver, drains_asked: list[None]
) -> None:
    # Given ids waiting on the queue whose drain message never arrived, its flag lapsed
    record(owner, receiver.url)
    assert len(drains_asked) == 1
    cache_redis.queue_client().delete(dispatch._due_keys()[1])

    # When the dispatcher ticks
    dispatch.deliveries_dispatch_due()

    # Then it asks for a drain
    assert len(drains_asked) == 2


def test_with_the_queue_unreachable_a_message_carries_the_ids(
    owner: Client, receiver: Receiver, celery_worker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the due queue's Redis is unreachable
    due_queue_through(monkeypatch, redis.Redis(port=1, socket_connect_timeout=0.2))

    # When an event is recorded
    delivery = record(owner, receiver.url)

    # Then the session's worker still delivers it, from a message carrying its id
    assert len(receiver.wait_for(1)) == 1
    until(lambda: Delivery.objects.get(pk=delivery.pk).state == Delivery.State.SUCCEEDED, what="the outcome")


def _test_events(api: Api, endpoint: dict[str, Any], *, count: int = 1, hung: SilentServer | None = None) -> int:
    """Ask for `count` test events of the endpoint, each accepted; with `hung`, the connections
    made to it by then, at least one."""
    for _ in range(count):
        assert api.post(f"/api/webhook-endpoints/{endpoint['id']}/test/").status_code == 202
    if hung is None:
        return 0
    assert hung.connections
    return len(hung.connections)


def test_after_a_drain_is_refused_the_next_requests_leave_their_deliveries_to_the_dispatcher(
    api: Api, receiver: Receiver, broker_hung: SilentServer
) -> None:
    # Given an endpoint, and its test event whose drain waited out a hung broker (this process's;
    # the session's worker and beat still reach theirs), no drain asked for before it
    endpoint = endpoint_create(api, receiver.url)
    cache_redis.queue_client().delete(dispatch._due_keys()[1])
    tried = _test_events(api, endpoint, hung=broker_hung)

    # When the client asks for three more test events right after it
    _test_events(api, endpoint, count=3)

    # Then none tries the broker again, and the dispatcher has the four drained: each arrives once
    assert len(broker_hung.connections) == tried
    received = receiver.wait_for(4, timeout=30)
    assert len({request.headers["webhook-id"] for request in received}) == 4


def test_without_the_queue_after_a_message_is_refused_the_next_requests_leave_theirs_to_the_dispatcher(
    api: Api, receiver: Receiver, broker_hung: SilentServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an endpoint, the due queue's Redis unreachable from this process (so each event's
    # delivery goes by a message of its own), and a test event whose message waited out a hung
    # broker (this process's; the session's worker and beat still reach theirs)
    endpoint = endpoint_create(api, receiver.url)
    due_queue_through(monkeypatch, redis.Redis(port=1, retry=Retry(NoBackoff(), 0)))
    tried = _test_events(api, endpoint, hung=broker_hung)

    # When the client asks for three more test events right after it
    _test_events(api, endpoint, count=3)

    # Then none tries the broker again, and the dispatcher publishes the four: each arrives once
    assert len(broker_hung.connections) == tried
    received = receiver.wait_for(4, timeout=30)
    assert len({request.headers["webhook-id"] for request in received}) == 4


def test_after_the_queue_hangs_the_next_events_go_by_message_without_waiting_on_it(
    api: Api, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an endpoint, and the due queue's Redis hung for this process (it takes connections
    # and never answers): a test event waited out its client's timeout, then went by message
    endpoint = endpoint_create(api, receiver.url)
    with silent_server() as hung:
        host, port = hung.address.split(":")
        due_queue_through(monkeypatch, redis.Redis(host=host, port=int(port), socket_timeout=1,
                                                   socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)))
        tried = _test_events(api, endpoint, hung=hung)

        # When the client asks for three more test events right after it
        _test_events(api, endpoint, count=3)

        # Then none waits on the hung Redis again, and each arrives once, by message
        assert len(hung.connections) == tried
    received = receiver.wait_for(4, timeout=30)
    assert len({request.headers["webhook-id"] for request in received}) == 4
