"""Host names at delivery time: one client's name server that never answers must not hold up
another client's deliveries (getaddrinfo cannot be interrupted, so a hung lookup keeps its
thread after its attempt has given up)."""
from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from urllib.parse import urlsplit

import pytest
from django.utils import timezone

from core.models import Client
from core.services import client_create
from examples.receiver import Receiver
from webhooks import attempts, outbox
from webhooks.models import Delivery, Event

pytestmark = pytest.mark.django_db(transaction=True)


class HungNameServer:
    """Names under .slow.example never answer (until the test ends); the others are loopback."""

    def __init__(self) -> None:
        self.ended = threading.Event()
        self.asked: list[str] = []

    def __call__(self, host: str, port: int) -> Sequence[str]:
        self.asked.append(host)
        if host.endswith(".slow.example"):
            self.ended.wait(60)
        return ["127.0.0.1"]


@pytest.fixture
def name_server() -> Iterator[HungNameServer]:
    server = HungNameServer()
    yield server
    server.ended.set()  # frees the resolver threads still waiting on it


def make_delivery(owner: Client, url: str) -> Delivery:
    """An outbox row written directly (nothing published), as event_record would leave it."""
    now = timezone.now()
    event = Event.objects.create(
        owner=owner, subject_id=uuid.uuid4(), event_type="job.succeeded",
        body=outbox.event_body(event_type="job.succeeded", data={"id": "x"}, at=now),
    )
    return Delivery.objects.create(event=event, owner=owner, subject_id=event.subject_id, url=url,
                                   next_attempt_at=now, dispatched_at=now)


def test_a_client_whose_name_server_hangs_never_holds_up_another_clients_deliveries(
    make_receiver: Callable[..., Receiver], name_server: HungNameServer
) -> None:
    # Given: a client whose deliveries name hosts its name server never answers for, each
    # attempt given up on at its limit (the lookups still waiting)
    hostile = client_create(name=f"hung-dns-{uuid.uuid4().hex[:8]}")
    hung = [make_delivery(hostile, f"http://h{i}.slow.example/hook").pk for i in range(12)]
    given_up = attempts.deliveries_attempt(delivery_ids=hung, resolver=name_server)
    assert given_up and all(outcome.status_code is None for outcome in given_up)

    # When: another client's delivery goes to a host whose name resolves at once
    receiver = make_receiver()
    port = urlsplit(receiver.url).port
    other = client_create(name=f"fine-dns-{uuid.uuid4().hex[:8]}")
    delivery = make_delivery(other, f"http://hooks.fine.example:{port}/hook")
    [outcome] = attempts.deliveries_attempt(delivery_ids=[delivery.pk], resolver=name_server)

    # Then: it is delivered, not given up on behind the other client's lookups
    assert (outcome.status_code, outcome.error) == (200, "")
    assert len(receiver.received) == 1
