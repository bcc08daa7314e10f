"""Fault 4: PostgreSQL restarts while jobs run; the API and workers reconnect by themselves and
no job is left STARTED."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from tests.faults.stack import Stack, WebhookReceiver, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(400)]

RUNNING = 4


def test_postgres_restart_while_jobs_run(
    make_stack: Callable[..., Stack], receiver: WebhookReceiver, figures: dict[str, Any]
) -> None:
    # Given jobs running on two workers
    stack = make_stack()
    stack.start_service(jobs=RUNNING, deliveries=1)
    api = stack.client()
    ids = [api.submit("api.tasks.long_running_task", {"duration": 6}, callback_url=receiver.url)["id"]
           for _ in range(RUNNING)]
    for job_id in ids:
        api.wait(job_id, until=lambda j: (j["progress"] or {}).get("current", 0) >= 1, timeout=60)

    # When PostgreSQL restarts (fast: every session is cut)
    restart_started = time.monotonic()
    stack.pg.restart("fast")
    restart_seconds = time.monotonic() - restart_started

    # Then the API answers again without being restarted
    def api_back() -> bool:
        return requests.get(stack.base_url + "/readyz", timeout=5).status_code == 200

    wait_for(api_back, timeout=30, what="readyz")
    api_back_after = time.monotonic() - restart_started
    after = api.submit("api.tasks.hello_world", {"message": "after"}, callback_url=receiver.url)

    # And every job ends: none is left STARTED
    finals = {job_id: api.wait(job_id, timeout=120) for job_id in [*ids, after["id"]]}
    all_final_after = time.monotonic() - restart_started
    statuses = {job_id: job["status"] for job_id, job in finals.items()}
    assert finals[after["id"]]["status"] == "SUCCESS"
    assert set(statuses.values()) <= {"SUCCESS", "FAILURE"}, statuses
    # Each final state produced exactly one webhook.
    wait_for(lambda: all(receiver.for_job(job_id) for job_id in finals), timeout=60, what="webhooks")
    for job_id, job in finals.items():
        types = [r.payload["type"] for r in receiver.for_job(job_id)]
        assert types == ["job.succeeded" if job["status"] == "SUCCESS" else "job.failed"], types
    figures.update(
        running_jobs=RUNNING,
        restart_seconds=round(restart_seconds, 2),
        seconds_until_api_ready=round(api_back_after, 2),
        seconds_until_all_final=round(all_final_after, 2),
        statuses=sorted(statuses.values()),
        errors=sorted({(job["error"] or {}).get("type", "") for job in finals.values()} - {""}),
    )
