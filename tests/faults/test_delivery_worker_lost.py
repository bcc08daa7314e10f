"""Fault 2: the worker sending a webhook is SIGKILLed mid-request; the delivery still completes."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.faults.stack import Stack, WebhookReceiver, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]


def test_delivery_worker_sigkill_mid_request_delivers_once(
    make_stack: Callable[..., Stack], receiver: WebhookReceiver, figures: dict[str, Any]
) -> None:
    # Given a jobs worker, a separate deliveries worker, beat (the dispatcher), and a receiver
    # that takes 5 s to answer its first request
    stack = make_stack()
    stack.start_service(jobs=1, deliveries=1)
    api = stack.client()
    receiver.answer_delay_seconds = 5
    job = api.submit("api.tasks.hello_world", {"message": "hook"}, callback_url=receiver.url)
    api.wait(job["id"])
    wait_for(lambda: receiver.requests_started, timeout=30, interval=0.02, what="an attempt in flight")

    # When the deliveries worker is SIGKILLed while the receiver is still answering, and a
    # replacement comes up (on the same queues: the dispatcher's periodic task is on
    # `maintenance`, and it is what republishes the delivery once the dead claim expires)
    stack.kill("deliveries")
    killed_at = time.monotonic()
    receiver.answer_delay_seconds = 0
    stack.start_worker("deliveries-2", queues="webhooks,maintenance", concurrency=1)

    # Then the delivery completes: one success, the interrupted attempt logged as such, and
    # every request the receiver saw carried the same webhook-id
    def delivered() -> dict[str, Any] | None:
        (delivery,) = api.deliveries(job["id"])
        return delivery if delivery["state"] == "succeeded" else None

    delivery = wait_for(delivered, timeout=180, interval=0.2, what="delivery succeeded")
    recovered_after = time.monotonic() - killed_at
    codes = [attempt["status_code"] for attempt in delivery["attempts"]]
    assert codes.count(200) == 1, delivery
    assert codes[-1] == 200
    assert "Interrupted" in delivery["attempts"][0]["error"], delivery
    assert {r.webhook_id for r in receiver.for_job(job["id"])} == {delivery["webhook_id"]}
    figures.update(seconds_until_delivered=round(recovered_after, 2),
                   attempts=len(codes), receiver_requests=len(receiver.for_job(job["id"])))
