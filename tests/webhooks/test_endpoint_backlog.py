"""A paced endpoint's backlog has a bound (WEBHOOK_MAX_BACKLOG_PER_ENDPOINT): once that many of
its deliveries wait for its pace, its client's submissions that would add to them are refused,
429 `webhook_backlog_full`, and nothing is dropped. Paced deliveries are never dropped and their
events are kept until sent, so an endpoint paced below its client's events grew rows without any
bound: a job a second, at the least pace, left 85,536 more waiting each day."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from django.utils import timezone
from requests import Response

from examples.receiver import Receiver
from tests.conftest import Api
from tests.webhooks.conftest import HELLO
from webhooks.models import Delivery

BOUND = 5


def waiting(endpoint: dict[str, Any]) -> int:
    return Delivery.objects.filter(endpoint_id=endpoint["id"], state=Delivery.State.PENDING).count()


def _submitted_until_refused(api: Api) -> Response:
    """The client's first submission refused (429), each before it run to its end."""
    for n in range(20):
        answer = api.post("/api/jobs/", json={"job_name": HELLO, "payload": {"message": str(n)}})
        if answer.status_code != 202:
            break
        api.wait(answer.json()["id"])
    assert answer.status_code == 429, answer.text
    return answer


def test_a_paced_endpoints_backlog_stops_at_its_bound_and_only_its_clients_jobs_for_it_wait(
    api: Api, make_api: Callable[..., Api], receiver: Receiver, settings: Any
) -> None:
    # Given a client whose endpoint takes one delivery every 100 s, and a bound of 5 waiting
    settings.WEBHOOK_MAX_BACKLOG_PER_ENDPOINT = BOUND
    response = api.post("/api/webhook-endpoints/", json={"url": receiver.url, "rate_limit_per_second": 0.01})
    assert response.status_code == 201, response.text
    endpoint = response.json()

    # When it submits jobs one after another, 20 at most, each to its end
    answers = []
    for n in range(20):
        answer = api.post("/api/jobs/", json={"job_name": HELLO, "payload": {"message": str(n)}})
        answers.append(answer)
        if answer.status_code != 202:
            break
        api.wait(answer.json()["id"])

    # Then its endpoint's backlog stopped at the bound, counted in the database: a submission
    # past it was refused, naming the endpoint, with when to come back
    refused = answers[-1]
    assert refused.status_code == 429, ([a.status_code for a in answers], waiting(endpoint))
    error = refused.json()["error"]
    assert error["code"] == "webhook_backlog_full"
    assert error["details"]["endpoint_id"] == endpoint["id"]
    assert error["details"]["max_waiting_deliveries"] == BOUND
    assert 1 <= int(refused.headers["Retry-After"]) <= 200
    assert BOUND <= waiting(endpoint) <= BOUND + 1
    # ...while its jobs that do not reach its endpoints, and another client's, are taken
    assert api.post("/api/jobs/", json={"job_name": HELLO, "webhook_endpoints": False}).status_code == 202
    assert make_api().post("/api/jobs/", json={"job_name": HELLO}).status_code == 202
    # ...and a batch that would add to the backlog is refused whole
    batch = api.post("/api/jobs/batch/", json={"jobs": [{"job_name": HELLO, "webhook_endpoints": False},
                                                        {"job_name": HELLO}]})
    assert batch.status_code == 429 and batch.json()["error"]["code"] == "webhook_backlog_full", batch.text


@pytest.mark.parametrize("slower", ["created first", "created last"])
def test_the_retry_after_of_a_refusal_waits_for_every_full_endpoint_not_only_the_first_found(
    api: Api, receiver: Receiver, settings: Any, slower: str
) -> None:
    # Given a client with two endpoints, one taking a delivery every 100 s, the other every 50 s,
    # and a bound of 5 waiting (whichever of the two the database reads first)
    settings.WEBHOOK_MAX_BACKLOG_PER_ENDPOINT = BOUND
    paces = [0.01, 0.02] if slower == "created first" else [0.02, 0.01]
    endpoints = []
    for pace in paces:
        response = api.post("/api/webhook-endpoints/", json={"url": receiver.url, "rate_limit_per_second": pace})
        assert response.status_code == 201, response.text
        endpoints.append(response.json())

    # When it submits jobs until one is refused: both backlogs are full then, each job having
    # added one delivery to each
    refused = _submitted_until_refused(api)

    # Then its Retry-After is the wait the slower endpoint needs to come below the bound: a
    # client that retried after the faster one's was refused again, for the other endpoint
    now = timezone.now()
    needed = {}
    for endpoint, pace in zip(endpoints, paces, strict=True):
        shown = api.get(f"/api/webhook-endpoints/{endpoint['id']}/").json()
        next_slot_at = datetime.fromisoformat(shown["next_slot_at"])
        assert (next_slot_at - now).total_seconds() * pace >= BOUND  # full, both
        needed[endpoint["id"]] = (next_slot_at - now).total_seconds() - (BOUND - 1) / pace
    slowest = max(needed, key=needed.__getitem__)
    assert refused.json()["error"]["details"]["endpoint_id"] == slowest, (refused.text, needed)
    assert int(refused.headers["Retry-After"]) >= needed[slowest] - 5, (refused.headers["Retry-After"], needed)


def test_limits_show_each_endpoints_backlog_as_the_refusal_counts_it(
    api: Api, receiver: Receiver, settings: Any
) -> None:
    # Given a client with an endpoint taking one delivery every 100 s, another without a pace,
    # and a bound of 5 waiting
    settings.WEBHOOK_MAX_BACKLOG_PER_ENDPOINT = BOUND
    paced = api.post("/api/webhook-endpoints/", json={"url": receiver.url, "rate_limit_per_second": 0.01}).json()
    assert api.post("/api/webhook-endpoints/", json={"url": receiver.url}).status_code == 201
    assert api.get("/api/limits/").json()["webhook_backlog"] == {"limit": BOUND, "used": 0, "endpoints": []}

    # When it submits jobs until one is refused for the paced endpoint's backlog
    refused = _submitted_until_refused(api)
    details = refused.json()["error"]["details"]

    # Then its limits show that endpoint's backlog in the refusal's figures (the count drops by
    # one every 100 s of its pace, so it is the same a moment later), and the other not at all
    assert api.get("/api/limits/").json()["webhook_backlog"] == {
        "limit": details["max_waiting_deliveries"],
        "used": details["waiting_deliveries"],
        "endpoints": [{"endpoint_id": paced["id"], "waiting_deliveries": details["waiting_deliveries"]}],
    }
    assert details["waiting_deliveries"] >= BOUND
