"""A delivery whose attempt's outcome cannot be recorded (the database refuses its row, a bug)
fails only itself: the rest of its batch, other clients' deliveries, are sent and recorded, and
it is retried on its schedule as an internal error, then given up, rather than failing its whole
batch at every drain for ever. Such internal errors are not its endpoint's receiver's: they do
not count toward disabling the endpoint, nor its receiver among the console's failing ones."""
from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client as BrowserClient
from django.utils import timezone

from core.models import Client
from core.services import client_create
from examples.receiver import Receiver, Reply
from tests.conftest import Api, worker_log_lines
from tests.console.test_console_page import _figures, row_of, section, text
from tests.console.test_receivers import failing_receivers_metric
from tests.webhooks.conftest import until
from webhooks import attempts, dispatch, endpoints, outbox, recording
from webhooks.models import Delivery, DeliveryAttempt

pytestmark = pytest.mark.django_db(transaction=True)

POISONED_PATH = "poisoned"


@pytest.fixture
def answers_refused() -> Iterator[None]:
    """The database refuses to store a receiver's answer to an attempt sent to a URL ending in
    POISONED_PATH, in every process (the session worker's too): a trigger, as a constraint or a
    value it cannot hold would."""
    _answers_refused()
    try:
        yield
    finally:
        _answers_stored()


def _answers_refused() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"""
            CREATE FUNCTION test_answer_refused() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.url LIKE '%/{POISONED_PATH}' AND NEW.status_code IS NOT NULL THEN
                    RAISE EXCEPTION 'this answer cannot be stored';
                END IF;
                RETURN NEW;
            END $$
        """)
        cursor.execute("CREATE TRIGGER test_answer_refused BEFORE UPDATE ON webhooks_deliveryattempt "
                       "FOR EACH ROW EXECUTE FUNCTION test_answer_refused()")


def _answers_stored() -> None:
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER IF EXISTS test_answer_refused ON webhooks_deliveryattempt")
        cursor.execute("DROP FUNCTION IF EXISTS test_answer_refused()")


def _recorded(owner: Client, url: str) -> Delivery:
    event = outbox.event_record(owner_id=owner.id, subject_id=uuid.uuid4(), event_type="job.succeeded",
                                data={"n": uuid.uuid4().hex}, callback_url=url, publish=False)
    return Delivery.objects.get(event=event)


def test_a_delivery_whose_outcome_cannot_be_recorded_fails_alone_and_is_given_up(
    receiver: Receiver, answers_refused: None, celery_worker: str, celery_worker_log: Path
) -> None:
    # Given one batch of three clients' deliveries, one of which goes where the database will not
    # store the answer
    poisoned = _recorded(client_create(name=f"poisoned-{uuid.uuid4().hex[:6]}"), f"{receiver.url}{POISONED_PATH}")
    others = [_recorded(client_create(name=f"other-{uuid.uuid4().hex[:6]}"), f"{receiver.url}hook") for _ in range(2)]

    # When the worker's drain sends them together
    dispatch.deliveries_queue(delivery_ids=[poisoned.pk, *[d.pk for d in others]])

    # Then the other clients' deliveries are delivered and recorded, once each
    def states() -> dict[int, str]:
        return dict(Delivery.objects.filter(pk__in=[poisoned.pk, *[d.pk for d in others]]).values_list("pk", "state"))

    until(lambda: all(states()[d.pk] == Delivery.State.SUCCEEDED for d in others), what="the others delivered")
    assert list(DeliveryAttempt.objects.filter(delivery__in=others).values_list("number", "status_code")) == [
        (1, 200), (1, 200)
    ]
    # And the poisoned one fails alone: each attempt recorded as an internal error, retried on its
    # schedule (three attempts in the tests), then given up
    until(lambda: states()[poisoned.pk] == Delivery.State.FAILED, what="the poisoned one given up")
    tried = list(DeliveryAttempt.objects.filter(delivery=poisoned).values_list("status_code", "error"))
    assert tried == [(None, f"{recording.UNRECORDED}: InternalError")] * 3
    sent = sorted(r.headers["webhook-id"] for r in receiver.received)
    assert sent == sorted([poisoned.event.message_id] * 3 + [d.event.message_id for d in others])
    # And the worker says so at WARNING, naming it and why
    [line] = until(lambda: worker_log_lines(celery_worker_log, "webhook deliveries given up",
                                            f"delivery_id={poisoned.pk} "), what="the worker's line")
    assert line["level"] == "warning"
    assert line["error"] == f"{recording.UNRECORDED}: InternalError"


def test_internal_errors_do_not_count_toward_disabling_an_endpoint(
    receiver: Receiver, answers_refused: None, make_api: Callable[..., Api], celery_worker: str
) -> None:
    # Given an endpoint whose receiver answers every delivery 200, but whose answers the database
    # will not store (a bug of ours), and the tests' health rule: three attempts in a row failing
    # over a second disable an endpoint, as one delivery's three attempts do (0, 1, 1 s apart)
    api = make_api()
    created = api.post("/api/webhook-endpoints/", json={"url": f"{receiver.url}{POISONED_PATH}"})
    assert created.status_code == 201, created.text
    endpoint = created.json()

    # When a job of its client succeeds, and its delivery's every attempt fails as an internal error
    job = api.submit("api.tasks.hello_world")
    delivery = until(lambda: Delivery.objects.filter(subject_id=job["id"], state=Delivery.State.FAILED).first(),
                     what="the delivery given up")
    assert list(DeliveryAttempt.objects.filter(delivery=delivery).values_list("status_code", "error")) == [
        (None, f"{recording.UNRECORDED}: InternalError")
    ] * 3

    # Then the endpoint stays enabled, its health untouched: its receiver answered each attempt
    # (it was disabled as failing, its deliveries held)
    after = api.get(f"/api/webhook-endpoints/{endpoint['id']}/").json()
    assert (after["enabled"], after["disabled_reason"]) == (True, None)
    assert after["health"] == {"succeeded_24h": 0, "failed_24h": 0, "last_success_at": None,
                               "last_failure_at": None, "consecutive_failures": 0, "disabled_reason": None}


def test_a_delivery_failing_only_by_internal_errors_does_not_count_its_receiver_as_failing(
    receiver: Receiver, make_receiver: Callable[..., Receiver], answers_refused: None, settings: Any
) -> None:
    # Given an endpoint whose receiver answers 200 but whose answers the database will not store
    # (a bug of ours), a callback whose receiver answers 503, and retries an hour apart (left to
    # this test: no countdown message for the session's worker)
    settings.WEBHOOK_RETRY_SCHEDULE = [0, 3600, 3600, 3600]
    ours = client_create(name=f"ours-{uuid.uuid4().hex[:6]}")
    endpoint = endpoints.endpoint_create(owner_id=ours.id, url=f"{receiver.url}{POISONED_PATH}")
    event = outbox.event_record(owner_id=ours.id, subject_id=uuid.uuid4(), event_type="job.succeeded",
                                data={}, endpoints=[endpoint], publish=False)
    poisoned = Delivery.objects.get(event=event)
    failing = make_receiver(Reply(status=503, body=b""))
    theirs = _recorded(client_create(name=f"theirs-{uuid.uuid4().hex[:6]}"), f"{failing.url}hook")
    operator = BrowserClient()
    operator.force_login(User.objects.create_user("operator", is_staff=True, is_superuser=True))
    endpoint_row = f"127.0.0.1 (endpoint {str(endpoint.pk)[:8]})"

    # When each is attempted and fails: the endpoint's by our fault, the callback's by its receiver
    attempts.deliveries_attempt(delivery_ids=[poisoned.pk, theirs.pk])
    assert set(Delivery.objects.filter(pk__in=[poisoned.pk, theirs.pk]).values_list("state", flat=True)) == {
        Delivery.State.PENDING
    }

    # Then the console lists the receiver that failed, not the endpoint, and /metrics counts one
    receivers = section(_figures(operator), "receivers")
    assert row_of(receivers, "127.0.0.1")[1:4] == ["1", "0", "HTTP 503"]
    assert endpoint_row not in text(receivers)
    assert failing_receivers_metric() == 1

    # And when the endpoint's receiver then fails an attempt itself (503, stored), and the next
    # one fails by our fault again, the endpoint counts as failing, shown with its receiver's error
    def attempted_again(reply: Reply) -> None:
        receiver.replies.append(reply)
        Delivery.objects.filter(pk=poisoned.pk).update(next_attempt_at=timezone.now())
        attempts.deliveries_attempt(delivery_ids=[poisoned.pk])

    _answers_stored()
    attempted_again(Reply(status=503, body=b""))
    _answers_refused()
    attempted_again(Reply(status=200))
    assert list(DeliveryAttempt.objects.filter(delivery=poisoned).values_list("status_code", "error")) == [
        (None, f"{recording.UNRECORDED}: InternalError"), (503, ""), (None, f"{recording.UNRECORDED}: InternalError")
    ]
    receivers = section(_figures(operator), "receivers")
    assert row_of(receivers, endpoint_row)[1:4] == ["1", "0", "HTTP 503"]
    assert failing_receivers_metric() == 2
