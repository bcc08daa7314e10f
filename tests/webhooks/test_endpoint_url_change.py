"""A change of an endpoint's URL costs its request no work on the endpoint's deliveries, however
many wait: each attempt goes to the endpoint's URL as it is when the attempt is claimed, and its
row in the log keeps that URL. The request rewrote every waiting delivery's URL: 5.3 s of its API
process at 200,000 of them, in its turn (docs/webhooks.md, "Its URL")."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.utils import timezone

from examples.receiver import Receiver
from tests.conftest import Api
from tests.webhooks.conftest import until
from tests.webhooks.test_endpoint_reschedule import (
    BACKLOG,
    endpoint_with_backlog,
    patch,
)
from webhooks import dispatch
from webhooks.models import Delivery


def succeeded(api: Api, endpoint: dict[str, Any]) -> list[dict[str, Any]]:
    response = api.get("/api/deliveries/", params={"endpoint": endpoint["id"], "state": "succeeded"})
    assert response.status_code == 200, response.text
    return list(response.json()["results"])


def test_a_new_url_costs_the_request_no_delivery_and_the_waiting_ones_go_there(
    api: Api, make_receiver: Callable[..., Receiver], delivery_writes: list[tuple[str, int]]
) -> None:
    # Given an endpoint paced at one delivery every 100 s, with 3,000 waiting for their slots,
    # the first of which was sent (to the old receiver) before any change
    old, new = make_receiver(), make_receiver()
    endpoint = endpoint_with_backlog(api, old.url)
    first = Delivery.objects.filter(endpoint_id=endpoint["id"]).order_by("next_attempt_at").first()
    assert first is not None
    Delivery.objects.filter(pk=first.pk).update(next_attempt_at=timezone.now(), dispatched_at=timezone.now())
    dispatch.deliveries_publish(delivery_ids=[first.pk])
    until(lambda: succeeded(api, endpoint), what="the first delivery, to the old URL")
    delivery_writes.clear()

    # When its client moves it to another receiver
    assert patch(api, endpoint, url=new.url)["url"] == new.url

    # Then the request wrote no delivery
    assert delivery_writes == []

    # And once the client raises the pace, the waiting deliveries go to the new receiver only
    patch(api, endpoint, rate_limit_per_second=20)
    new.wait_for(20, timeout=30)
    assert len(old.received) == 1
    [*later, before] = until(lambda: (done := succeeded(api, endpoint)) and len(done) >= 20 and done,
                             what="20 delivered to the new URL")

    # And the log says where each attempt went: the first to the old URL, the later ones to
    # the new one; each delivery's own url stays where it was addressed when recorded
    assert before["id"] == first.pk and [a["url"] for a in before["attempts"]] == [old.url]
    assert {a["url"] for d in later for a in d["attempts"]} == {new.url}
    assert {d["url"] for d in [*later, before]} == {old.url}
    assert Delivery.objects.filter(endpoint_id=endpoint["id"]).count() == BACKLOG
