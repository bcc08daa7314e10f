"""Load: 1,000 jobs from 16 concurrent clients, each with a callback; nothing lost or doubled."""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.faults.stack import Api, Stack, WebhookReceiver, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(900)]

JOBS = 1000
CLIENTS = 16


def test_a_thousand_jobs_from_sixteen_clients(
    make_stack: Callable[..., Stack], receiver: WebhookReceiver, figures: dict[str, Any]
) -> None:
    # Given the service as deployed on one small machine: gunicorn, a jobs worker, a deliveries
    # worker and beat
    stack = make_stack(env={"WEB_CONCURRENCY": "3", "WEB_THREADS": "2"})
    stack.start_service(jobs=4, deliveries=4)
    key = stack.client().session.headers["Authorization"].split()[1]

    # When 16 clients submit 1,000 jobs between them, each with a callback_url
    def client_run(index: int) -> list[tuple[int, str]]:
        api = Api(stack.base_url, key)  # one HTTP session per client
        answers = []
        for number in range(index, JOBS, CLIENTS):
            response = api.post("/api/jobs/", json={
                "job_name": "api.tasks.hello_world", "payload": {"message": str(number)},
                "callback_url": receiver.url,
            })
            answers.append((response.status_code, response.json().get("id", "")))
        return answers

    started = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = [answer for batch in pool.map(client_run, range(CLIENTS)) for answer in batch]
    submitted_in = time.monotonic() - started

    # Then every submission was accepted, every job succeeds, and 1,000 distinct webhook-ids
    # arrive, one per job
    assert Counter(code for code, _ in answers) == {202: JOBS}
    ids = {job_id for _, job_id in answers}
    assert len(ids) == JOBS

    def all_done() -> bool:
        rows = stack.sql("SELECT status, count(*) FROM jobs_job GROUP BY status")
        return dict(rows).get("SUCCESS") == JOBS

    wait_for(all_done, timeout=600, interval=0.5, what="1,000 jobs SUCCESS")
    all_succeeded_in = time.monotonic() - started
    wait_for(lambda: len(set(receiver.ids())) >= JOBS, timeout=300, interval=0.5, what="1,000 webhooks")
    all_delivered_in = time.monotonic() - started
    time.sleep(3)  # a duplicate, if any, would arrive now
    seen = Counter(receiver.ids())
    assert len(seen) == JOBS
    assert max(seen.values()) == 1, [i for i, n in seen.items() if n > 1][:5]
    assert {r.payload["data"]["id"] for r in receiver.received} == ids
    assert {r.payload["type"] for r in receiver.received} == {"job.succeeded"}

    # And the job count and the delivery log agree
    (jobs,) = stack.sql("SELECT count(*) FROM jobs_job WHERE status = 'SUCCESS'")
    (events,) = stack.sql("SELECT count(DISTINCT message_id) FROM webhooks_event")
    (succeeded,) = stack.sql("SELECT count(*) FROM webhooks_delivery WHERE state = 'succeeded'")
    (ok_attempts,) = stack.sql("SELECT count(*) FROM webhooks_deliveryattempt WHERE status_code = 200")
    (all_attempts,) = stack.sql("SELECT count(*) FROM webhooks_deliveryattempt")
    message_ids = {row[0] for row in stack.sql("SELECT message_id FROM webhooks_event")}
    assert jobs[0] == events[0] == succeeded[0] == ok_attempts[0] == JOBS
    assert message_ids == set(seen)
    figures.update(
        jobs=JOBS, clients=CLIENTS, submit_seconds=round(submitted_in, 2),
        submissions_per_second=round(JOBS / submitted_in, 1),
        seconds_until_all_success=round(all_succeeded_in, 2),
        seconds_until_all_webhooks=round(all_delivered_in, 2),
        delivery_attempts=all_attempts[0],
    )
