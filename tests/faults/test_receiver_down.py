"""Fault 5: the webhook receiver is down for the first attempts, then returns: all delivered."""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from tests.faults.stack import Stack, WebhookReceiver, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

JOBS = 10


def test_receiver_down_for_first_attempts_then_every_event_delivered_once(
    make_stack: Callable[..., Stack], receiver: WebhookReceiver, figures: dict[str, Any]
) -> None:
    # Given the service with beat (retries use a due-time and the dispatcher) and a receiver
    # whose port is closed (connection refused)
    stack = make_stack()
    stack.start_service(jobs=1, deliveries=2)
    api = stack.client()
    receiver.down()
    events = ["job.started", "job.succeeded"]
    ids = [api.submit("api.tasks.hello_world", {"message": str(i)}, callback_url=receiver.url,
                      webhook_events=events)["id"] for i in range(JOBS)]

    # When every delivery has failed at least three times
    def attempts_made() -> int:
        return min(d["attempt_count"] for job_id in ids for d in api.deliveries(job_id))

    wait_for(lambda: all(len(api.deliveries(job_id)) == 2 for job_id in ids), timeout=60,
             what="two deliveries per job")
    wait_for(lambda: attempts_made() >= 3, timeout=60, interval=0.2, what="three failed attempts")
    failed_attempts = sum(d["attempt_count"] for job_id in ids for d in api.deliveries(job_id))
    receiver.up()
    back_at = time.monotonic()

    # Then every event is delivered, each webhook-id acknowledged once
    def all_succeeded() -> bool:
        return all(d["state"] == "succeeded" for job_id in ids for d in api.deliveries(job_id))

    wait_for(all_succeeded, timeout=120, interval=0.2, what="all deliveries succeeded")
    delivered_after = time.monotonic() - back_at
    time.sleep(2)
    expected = {d["webhook_id"] for job_id in ids for d in api.deliveries(job_id)}
    seen = Counter(receiver.ids())
    assert set(seen) == expected
    assert len(expected) == 2 * JOBS
    assert max(seen.values()) == 1, seen
    for job_id in ids:
        for delivery in api.deliveries(job_id):
            codes = [a["status_code"] for a in delivery["attempts"]]
            assert codes[-1] == 200 and codes.count(200) == 1
            assert all(a["error"] for a in delivery["attempts"][:-1])
    figures.update(events=len(expected), failed_attempts_while_down=failed_attempts,
                   seconds_from_receiver_back_to_all_delivered=round(delivered_after, 2))
