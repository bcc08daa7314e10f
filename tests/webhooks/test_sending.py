"""Sending a batch: whatever one receiver does is that attempt's recorded outcome and nobody
else's; a host at its in-flight limit has the rest of its deliveries put back, not attempted."""
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from core import deadlines, http
from core.models import Client
from core.services import client_create
from examples.receiver import Receiver, Reply
from tests.conftest import Api
from tests.fakes.hostile_receiver import MODES, HostileReceiver
from webhooks import attempts, claims, dispatch, endpoints, outbox, sending, sql, tasks
from webhooks.models import Delivery, DeliveryAttempt

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT_SECONDS = 1.5


def sending_started(deliveries: list[Delivery]) -> threading.Thread:
    """A worker's drain of `deliveries` as one batch, under way on a thread of its own (its own
    database connection, closed as it ends)."""
    def send() -> None:
        try:
            attempts.deliveries_attempt(delivery_ids=[delivery.pk for delivery in deliveries])
        finally:
            connection.close()  # the thread's own

    sender = threading.Thread(target=send)
    sender.start()
    return sender


@pytest.fixture
def owner() -> Client:
    return client_create(name=f"sending-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def hostile() -> Iterator[HostileReceiver]:
    with HostileReceiver() as receiver:
        yield receiver


@pytest.fixture(autouse=True)
def short_attempts(settings: object) -> None:
    settings.WEBHOOK_TIMEOUT_SECONDS = TIMEOUT_SECONDS  # type: ignore[attr-defined]


def record(owner: Client, url: str) -> Delivery:
    event = outbox.event_record(owner_id=owner.id, subject_id=uuid.uuid4(), event_type="job.succeeded",
                                data={"n": uuid.uuid4().hex}, callback_url=url, publish=False)
    # Marked published, so that the session's worker and beat (if running) leave it to the test.
    Delivery.objects.filter(event=event).update(dispatched_at=timezone.now())
    return Delivery.objects.get(event=event)


def test_a_batch_of_every_hostile_mode_records_each_outcome_and_delivers_the_healthy_one(
    owner: Client, hostile: HostileReceiver, receiver: Receiver, settings: object
) -> None:
    # Given a batch with a delivery to each hostile mode (all on one host, uncapped here) and one
    # to a polite receiver
    settings.WEBHOOK_MAX_IN_FLIGHT_PER_HOST = 0  # type: ignore[attr-defined]
    modes = list(MODES[:19])  # one batch: BATCH_MAX_DELIVERIES less the polite one
    hostile_ones = [record(owner, hostile.url(mode)) for mode in modes]
    polite = record(owner, receiver.url)

    # When the batch is sent
    started = time.monotonic()
    outcomes = attempts.deliveries_attempt(delivery_ids=[d.pk for d in [*hostile_ones, polite]])
    elapsed = time.monotonic() - started

    # Then every attempt was made and recorded, within the attempt's limit (plus the recording)
    assert len(outcomes) == len(modes) + 1
    assert elapsed < TIMEOUT_SECONDS + deadlines.SLACK_SECONDS + 2
    # (attempt 1: a retry due at once may already be under way on the session's worker)
    assert not DeliveryAttempt.objects.filter(delivery__owner=owner, number=1, finished_at__isnull=True).exists()
    assert Delivery.objects.get(pk=polite.pk).state == Delivery.State.SUCCEEDED
    assert len(receiver.wait_for(1)) == 1
    by_mode = {mode: DeliveryAttempt.objects.get(delivery_id=d.pk, number=1) for mode, d in zip(modes, hostile_ones, strict=True)}
    assert by_mode["hang"].error.startswith("No response within")
    assert by_mode["drip"].status_code == 200
    assert by_mode["garbage-status"].error.startswith("Connection failed")


def test_the_rest_of_the_modes_too(owner: Client, hostile: HostileReceiver, settings: object) -> None:
    settings.WEBHOOK_MAX_IN_FLIGHT_PER_HOST = 0  # type: ignore[attr-defined]
    deliveries = [record(owner, hostile.url(mode)) for mode in MODES[19:]]

    outcomes = attempts.deliveries_attempt(delivery_ids=[d.pk for d in deliveries])

    assert len(outcomes) == len(deliveries)
    assert not DeliveryAttempt.objects.filter(delivery__owner=owner, number=1, finished_at__isnull=True).exists()
    # retry-after-*: a 503 whatever the header's form, the next attempt planned within bounds
    for delivery in Delivery.objects.filter(owner=owner):
        assert delivery.state in (Delivery.State.PENDING, Delivery.State.FAILED)
        assert delivery.next_attempt_at is None or delivery.next_attempt_at <= timezone.now() + timedelta(
            seconds=settings.WEBHOOK_RETRY_AFTER_MAX_SECONDS + 1  # type: ignore[attr-defined]
        )


def test_an_attempt_that_raises_is_its_own_outcome(
    owner: Client, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a batch in which sending one delivery raises (something core.http did not foresee)
    doomed, fine = record(owner, receiver.url + "?doomed"), record(owner, receiver.url)
    send = attempts._send

    def sometimes_raising(claimed: object, resolver: http.Resolver | None) -> http.HttpResult:
        if "doomed" in claimed.url:  # type: ignore[attr-defined]
            raise RuntimeError("a surprise")
        return send(claimed, resolver)  # type: ignore[arg-type]

    monkeypatch.setattr(attempts, "_send", sometimes_raising)

    # When the batch is sent
    attempts.deliveries_attempt(delivery_ids=[doomed.pk, fine.pk])

    # Then the one is recorded as its own error, and the other delivered
    (attempt,) = DeliveryAttempt.objects.filter(delivery=doomed)
    assert attempt.error == "Internal error while sending: RuntimeError" and attempt.finished_at is not None
    assert Delivery.objects.get(pk=fine.pk).state == Delivery.State.SUCCEEDED


def test_a_batchs_answers_are_recorded_as_they_come_not_once_another_clients_attempt_times_out(
    owner: Client, hostile: HostileReceiver, make_receiver: Callable[..., Receiver], settings: object
) -> None:
    # Given a batch holding another client's delivery to a receiver that never answers (its
    # attempt takes the whole limit, 3 s here), and this client's deliveries to a receiver that
    # answers at once and to one that fails them (500), its retry an hour away (no countdown)
    settings.WEBHOOK_TIMEOUT_SECONDS = limit = 3.0  # type: ignore[attr-defined]
    settings.WEBHOOK_RETRY_SCHEDULE = [0, 3600, 3600]  # type: ignore[attr-defined]
    theirs = record(client_create(name=f"hanging-{uuid.uuid4().hex[:8]}"), hostile.url("hang"))
    healthy, failing = make_receiver(), make_receiver(Reply(status=500))
    delivered, failed = record(owner, healthy.url), record(owner, failing.url)
    ours = DeliveryAttempt.objects.filter(delivery__in=[delivered, failed], finished_at__isnull=False)

    # When a worker sends the batch
    started = time.monotonic()
    sender = sending_started([theirs, delivered, failed])
    while ours.count() < 2 and sender.is_alive():
        time.sleep(0.02)
    seen_after = time.monotonic() - started
    theirs_in_flight = DeliveryAttempt.objects.filter(delivery=theirs, finished_at__isnull=True).exists()
    delivered.refresh_from_db()
    failed.refresh_from_db()
    sender.join()

    # Then this client's answers are in its deliveries' logs while the other client's attempt
    # still hangs, well before its limit (they were recorded once it timed out, 3 s on): one
    # delivered, the other's retry planned from when it failed
    assert theirs_in_flight and seen_after < limit / 2
    assert delivered.state == Delivery.State.SUCCEEDED and delivered.claim_token is None
    assert (failed.state, failed.claim_token) == (Delivery.State.PENDING, None)
    assert failed.next_attempt_at is not None and failed.next_attempt_at > timezone.now() + timedelta(minutes=50)
    assert sorted(ours.values_list("status_code", flat=True)) == [200, 500]
    # And the hanging one is recorded as its timeout once it ends, each delivery attempted once
    (hung,) = DeliveryAttempt.objects.filter(delivery=theirs)
    assert hung.status_code is None and hung.error.startswith("No response within")
    assert [len(healthy.received), len(failing.received)] == [1, 1]


def test_a_batch_on_one_lane_records_each_answer_as_it_comes_not_once_the_lane_ends(
    owner: Client, make_receiver: Callable[..., Receiver], settings: object
) -> None:
    # Given a batch of six of one client's deliveries to one host, one at a time there (one lane
    # sends them one after another, 3 s at most), its receiver answering each in 0.3 s
    settings.WEBHOOK_MAX_IN_FLIGHT_PER_HOST = 1  # type: ignore[attr-defined]
    settings.WEBHOOK_TIMEOUT_SECONDS = 3.0  # type: ignore[attr-defined]
    steady = make_receiver(*[Reply(delay_seconds=0.3)] * 6)
    ours = [record(owner, steady.url) for _ in range(6)]
    done = DeliveryAttempt.objects.filter(delivery__in=ours, finished_at__isnull=False)

    # When a worker sends it
    sender = sending_started(ours)
    while not done.exists() and sender.is_alive():
        time.sleep(0.02)
    sent_by_then = len(steady.received)
    sender.join()

    # Then the first answer is in its delivery's log while the lane still sends the others
    # (before, the lane ran on the worker's own thread and its answers were recorded once it
    # ended, 1.8 s on here, up to WEBHOOK_TIMEOUT_SECONDS and an attempt's limit by default)
    assert sent_by_then < 6
    assert done.count() == 6 and len(steady.received) == 6


def test_a_batch_whose_recording_fails_takes_no_more_attempts_and_spends_none_it_did_not_make(
    make_api: Callable[..., Api], receiver: Receiver, make_receiver: Callable[..., Receiver], settings: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a batch holding another client's delivery to a quick receiver and five of this
    # client's to a receiver answering each in 0.3 s (quick: one lane sends them one after
    # another), and the database failing the first recording (injected: a deadlock, the
    # database up)
    api = make_api()
    settings.WEBHOOK_MAX_IN_FLIGHT_PER_HOST = 1  # type: ignore[attr-defined]
    steady = make_receiver(*[Reply(delay_seconds=0.3)] * 10)
    first = record(client_create(name=f"quick-{uuid.uuid4().hex[:8]}"), receiver.url)
    ours = [record(api.client, steady.url) for _ in range(5)]
    batch = [first.pk, *(d.pk for d in ours)]
    record_each = attempts.recording.record_each_if_need_be
    failures = [OperationalError("deadlock detected")]

    def failing_once(*args: object, **kwargs: object) -> object:
        if failures:
            raise failures.pop()
        return record_each(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(attempts.recording, "record_each_if_need_be", failing_once)

    # When it is sent
    with pytest.raises(OperationalError):
        attempts.deliveries_attempt(delivery_ids=batch)

    # Then the lane took no more once the first recording failed (before, all five went out,
    # each then sent again once its claim, ended by the failure, was taken anew), and no claim
    # of the batch holds: each can be sent again at once
    went_out = {received.headers["webhook-id"] for received in steady.received}
    assert 1 <= len(went_out) <= 2
    assert not Delivery.objects.filter(pk__in=batch, claimed_until__gt=timezone.now()).exists()

    # And once it is sent again, the client's delivery log shows an interrupted attempt only for
    # those that went out: the others' first attempt is the one sent now, none of their schedule
    # spent (before, each showed attempt 1 as interrupted, its real one numbered 2)
    attempts.deliveries_attempt(delivery_ids=batch)
    response = api.get("/api/deliveries/")
    assert response.status_code == 200, response.text
    logs = {delivery["webhook_id"]: delivery for delivery in response.json()["results"]}
    assert len(logs) == 5
    for webhook_id, delivery in logs.items():
        expected = [(1, sql.INTERRUPTED), (2, "")] if webhook_id in went_out else [(1, "")]
        assert [(attempt["number"], attempt["error"]) for attempt in delivery["attempts"]] == expected
        assert (delivery["state"], delivery["attempt_count"]) == ("succeeded", len(expected))


@pytest.fixture
def hold_slots() -> Iterator[Callable[[str, int], Callable[[], None]]]:
    """Take `count` places of a share (sending.host_share or client_share), as attempts under
    way in another worker would; what it returns releases them early."""
    held: list[object] = []

    def hold(share: str, count: int) -> Callable[[], None]:
        taken = []
        for _ in range(count):
            slot = sending.slots.acquire(share, limit=count, lease_seconds=30)
            assert slot is not None and slot.held
            taken.append(slot)
        held.extend(taken)
        return lambda: [slot.release() for slot in taken]  # type: ignore[func-returns-value]

    yield hold
    for slot in held:
        slot.release()  # type: ignore[attr-defined]


def test_a_host_at_its_limit_has_the_rest_put_back_without_an_attempt(
    owner: Client, receiver: Receiver, settings: object, hold_slots: Callable[[str, int], Callable[[], None]]
) -> None:
    # Given a host where the client's two in-flight slots are taken by slow attempts under way elsewhere
    settings.WEBHOOK_MAX_IN_FLIGHT_PER_HOST = 2  # type: ignore[attr-defined]
    deliveries = [record(owner, receiver.url) for _ in range(3)]
    hold_slots(sending.host_share(owner.id, receiver.url), 2)
    time.sleep(sending.SLOW_ATTEMPT_SECONDS + 0.1)

    # When its deliveries are attempted
    started = time.monotonic()
    outcomes = attempts.deliveries_attempt(delivery_ids=[d.pk for d in deliveries])

    # Then they are put back at once, none sent: each is pending, unclaimed, with no attempt
    # counted, parked (oldest first) for a place of the client's share of the host
    assert outcomes == []
    assert time.monotonic() - started < sending.SLOW_ATTEMPT_SECONDS
    assert receiver.received == []
    assert not DeliveryAttempt.objects.filter(delivery__owner=owner).exists()
    assert set(Delivery.objects.filter(owner=owner).values_list("state", "attempt_count", "claim_token")) == {
        (Delivery.State.PENDING, 0, None)
    }
    assert dispatch.deliveries_parked(share=sending.host_share(owner.id, receiver.url)) == [d.pk for d in deliveries]


def test_parked_deliveries_go_when_a_place_frees_and_none_waits_for_a_wake_up_that_came_first(
    owner: Client, receiver: Receiver, settings: object, hold_slots: Callable[[str, int], Callable[[], None]]
) -> None:
    # Given deliveries parked behind a host's slow attempts under way elsewhere
    settings.WEBHOOK_MAX_IN_FLIGHT_PER_HOST = 1  # type: ignore[attr-defined]
    share = sending.host_share(owner.id, receiver.url)
    release = hold_slots(share, 1)
    time.sleep(sending.SLOW_ATTEMPT_SECONDS + 0.1)
    parked = [record(owner, receiver.url) for _ in range(2)]
    assert attempts.deliveries_attempt(delivery_ids=[d.pk for d in parked]) == []
    assert dispatch.deliveries_parked(share=share) == [d.pk for d in parked]

    # When the attempt holding the place ends (its lane leaves the place and wakes them)
    release()
    assert dispatch.deliveries_wake(share=share) == 2
    attempts.deliveries_drain()  # or the session's worker, if it runs

    # Then they are sent, and none is parked any more
    assert len(receiver.wait_for(2)) == 2
    assert dispatch.deliveries_parked(share=share) == []

    # And deliveries parked after the place came free (its lane found none to wake) go at once
    late = record(owner, receiver.url)
    claimed = claims.claim(scope=claims.Scope(delivery_ids=[late.pk]), token=(token := uuid.uuid4()))
    sending.deliveries_put_back(unsent=[(claimed[0], sending.Unsent(share, 1))], token=token)
    assert dispatch.deliveries_parked(share=share) == []
    attempts.deliveries_drain()
    assert len(receiver.wait_for(3)) == 3


def test_a_host_with_a_free_slot_gets_its_deliveries_sent_in_turn(
    owner: Client, receiver: Receiver, settings: object, hold_slots: Callable[[str, int], Callable[[], None]]
) -> None:
    # Given a host limited to two attempts at once, one of them under way elsewhere
    settings.WEBHOOK_MAX_IN_FLIGHT_PER_HOST = 2  # type: ignore[attr-defined]
    deliveries = [record(owner, receiver.url) for _ in range(5)]
    hold_slots(sending.host_share(owner.id, receiver.url), 1)

    # When its deliveries are attempted side by side
    outcomes = attempts.deliveries_attempt(delivery_ids=[d.pk for d in deliveries])

    # Then they go one at a time through the free slot (a fast receiver frees it in
    # milliseconds, inside the wait), every one sent once
    assert len(outcomes) == 5
    assert len(receiver.wait_for(5)) == 5
    assert set(Delivery.objects.filter(owner=owner).values_list("state", "attempt_count")) == {
        (Delivery.State.SUCCEEDED, 1)
    }


def test_another_clients_slow_attempts_take_none_of_this_clients_share(
    owner: Client, receiver: Receiver, settings: object, hold_slots: Callable[[str, int], Callable[[], None]]
) -> None:
    # Given a host where another client's attempts hang, its whole share of the host and its
    # whole share of all hosts taken
    settings.WEBHOOK_MAX_IN_FLIGHT_PER_HOST = 2  # type: ignore[attr-defined]
    settings.WEBHOOK_MAX_IN_FLIGHT_PER_CLIENT = 2  # type: ignore[attr-defined]
    other = client_create(name=f"hostile-{uuid.uuid4().hex[:8]}")
    hold_slots(sending.host_share(other.id, receiver.url), 2)
    hold_slots(sending.client_share(other.id), 2)
    time.sleep(sending.SLOW_ATTEMPT_SECONDS + 0.1)
    theirs = record(other, receiver.url)
    ours = [record(owner, receiver.url) for _ in range(3)]

    # When a batch holding both clients' deliveries to that host is sent
    outcomes = attempts.deliveries_attempt(delivery_ids=[theirs.pk, *(d.pk for d in ours)])

    # Then this client's are delivered, and only the other client's is put back for its turn
    assert sorted(o.delivery_id for o in outcomes) == sorted(d.pk for d in ours)
    assert len(receiver.wait_for(3)) == 3
    theirs.refresh_from_db()
    assert (theirs.state, theirs.attempt_count) == (Delivery.State.PENDING, 0)


def test_a_client_at_its_limit_over_all_hosts_has_the_rest_put_back(
    owner: Client, make_receiver: Callable[..., Receiver], settings: object,
    hold_slots: Callable[[str, int], Callable[[], None]],
) -> None:
    # Given a client whose two places over all its hosts are taken by slow attempts elsewhere
    settings.WEBHOOK_MAX_IN_FLIGHT_PER_CLIENT = 2  # type: ignore[attr-defined]
    hold_slots(sending.client_share(owner.id), 2)
    time.sleep(sending.SLOW_ATTEMPT_SECONDS + 0.1)
    receivers = [make_receiver() for _ in range(3)]
    deliveries = [record(owner, each.url) for each in receivers]

    # When its deliveries to three other hosts are attempted
    started = time.monotonic()
    outcomes = attempts.deliveries_attempt(delivery_ids=[d.pk for d in deliveries])

    # Then none is sent: each is put back at once, parked for a place of the client's share
    assert outcomes == []
    assert time.monotonic() - started < sending.SLOW_ATTEMPT_SECONDS
    assert all(each.received == [] for each in receivers)
    assert set(Delivery.objects.filter(owner=owner).values_list("state", "attempt_count", "claim_token")) == {
        (Delivery.State.PENDING, 0, None)
    }
    assert dispatch.deliveries_parked(share=sending.client_share(owner.id)) == [d.pk for d in deliveries]


def test_an_endpoints_deliveries_due_together_go_at_its_pace_and_those_past_their_wait_take_its_next_slots(
    owner: Client, receiver: Receiver
) -> None:
    # Given three deliveries due now to an endpoint paced at one every five seconds
    endpoint = endpoints.endpoint_create(owner_id=owner.id, url=receiver.url, rate_limit_per_second=0.2)
    with transaction.atomic():
        events = [outbox.event_record(owner_id=owner.id, subject_id=uuid.uuid4(), event_type="job.succeeded",
                                      data={"n": n}, endpoints=[endpoint], publish=False) for n in range(3)]
    deliveries = Delivery.objects.filter(event__in=events)
    deliveries.update(next_attempt_at=timezone.now(), dispatched_at=timezone.now())
    endpoint.refresh_from_db()
    next_slot = endpoint.next_slot_at

    # When they are attempted together
    started = time.monotonic()
    outcomes = attempts.deliveries_attempt(delivery_ids=list(deliveries.values_list("pk", flat=True)))

    # Then one is sent; the others, whose turns would not come within a lane's wait, are put
    # back at once without an attempt, at the endpoint's next free slots, five seconds apart
    assert len(outcomes) == 1 and len(receiver.wait_for(1)) == 1
    assert time.monotonic() - started < sending.SLOT_WAIT_SECONDS
    put_back = deliveries.filter(state=Delivery.State.PENDING).order_by("next_attempt_at")
    assert [(d.attempt_count, d.claim_token) for d in put_back] == [(0, None), (0, None)]
    assert [d.next_attempt_at for d in put_back] == [next_slot, next_slot + timedelta(seconds=5)]
    assert all(d.dispatched_at is not None for d in put_back)  # on countdown messages
    endpoint.refresh_from_db()
    assert endpoint.next_slot_at == next_slot + timedelta(seconds=10)


def test_a_lane_sending_quick_attempts_is_waited_for_by_other_processes_lanes(
    owner: Client, make_receiver: Callable[..., Receiver], settings: object
) -> None:
    # Given a host with one place for the client, its lane sending twenty quick attempts (each
    # answered in 50 ms) one after another, for longer than a slow attempt takes
    settings.WEBHOOK_MAX_IN_FLIGHT_PER_HOST = 1  # type: ignore[attr-defined]
    receiver = make_receiver(*[Reply(delay_seconds=0.05)] * 20)
    deliveries = [record(owner, receiver.url) for _ in range(20)]

    sender = sending_started(deliveries)

    # When another process's lane asks for the place once the lane has held it a while
    time.sleep(sending.SLOW_ATTEMPT_SECONDS + 0.2)
    assert 0 < len(receiver.received) < 20
    probe = sending.slots.acquire(
        sending.host_share(owner.id, receiver.url), limit=1, lease_seconds=30, wait_seconds=5,
        wait_while_held_under_seconds=sending.SLOW_ATTEMPT_SECONDS,
    )
    sender.join()

    # Then it waits behind the quick attempts (judged by the one under way, not by how long the
    # place was held) and takes the place once the lane leaves it, every delivery sent
    assert probe is not None and probe.held
    probe.release()
    assert len(receiver.wait_for(20)) == 20


def test_a_lane_takes_no_more_after_a_slow_answer(
    owner: Client, make_receiver: Callable[..., Receiver], settings: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a host with one lane whose first answer is slow; the deliveries put back are not
    # woken when the lane frees (the session's worker would take their turn at once: in CI it
    # had claimed them before the assertion below)
    settings.WEBHOOK_MAX_IN_FLIGHT_PER_HOST = 1  # type: ignore[attr-defined]
    monkeypatch.setattr(dispatch, "deliveries_wake", lambda **_: 0)
    receiver = make_receiver(Reply(delay_seconds=sending.SLOW_ATTEMPT_SECONDS + 0.2))
    deliveries = [record(owner, receiver.url) for _ in range(3)]

    # When its deliveries are sent
    outcomes = attempts.deliveries_attempt(delivery_ids=[d.pk for d in deliveries])

    # Then the slow one was delivered and the others put back unattempted, for their turn
    assert [o.delivery_id for o in outcomes] == [deliveries[0].pk]
    assert len(receiver.received) == 1
    assert sorted(Delivery.objects.filter(owner=owner).values_list("state", "attempt_count")) == [
        (Delivery.State.PENDING, 0), (Delivery.State.PENDING, 0), (Delivery.State.SUCCEEDED, 1)
    ]


def test_slots_are_keyed_by_host_name_and_port() -> None:
    assert sending.host_of("https://Hooks.Example/in") == "hooks.example:443"
    assert sending.host_of("http://hooks.example:8080/in") == "hooks.example:8080"
    assert sending.host_of("http://[::1]:99/") == "::1:99"


def test_a_batch_ends_well_inside_its_claims_and_a_drain_inside_its_task_limit() -> None:
    # A batch's longest: a lane waits for a slot, takes deliveries for up to the timeout, and
    # its last attempt takes the request's limit and its slack.
    limit = django_settings.WEBHOOK_TIMEOUT_SECONDS + deadlines.SLACK_SECONDS
    longest_batch = sending.SLOT_WAIT_SECONDS + django_settings.WEBHOOK_TIMEOUT_SECONDS + limit

    assert claims.claim_lease_seconds() > longest_batch + 10  # recording the outcomes has time too
    assert sending.slot_lease_seconds() > limit
    assert tasks.deliveries_drain.soft_time_limit > dispatch.DRAIN_MAX_SECONDS + longest_batch + 10
