"""A paced endpoint's backlog has a bound (WEBHOOK_MAX_BACKLOG_PER_ENDPOINT): once that many of
its deliveries wait for its pace, its client's submissions that would add to them are refused,
429 `webhook_backlog_full`, and nothing is dropped. Paced deliveries are never dropped and their
events are kept until sent, so an endpoint paced below its client's events grew rows without any
bound: a job a second, at the least pace, left 85,536 more waiting each day."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from examples.receiver import Receiver
from tests.conftest import Api
from tests.webhooks.conftest import HELLO
from webhooks.models import Delivery

BOUND = 5


def waiting(endpoint: dict[str, Any]) -> int:
    return Delivery.objects.filter(endpoint_id=endpoint["id"], state=Delivery.State.PENDING).count()


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
