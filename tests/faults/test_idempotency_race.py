"""Fault 6: ten concurrent submissions with one Idempotency-Key make exactly one job."""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from tests.faults.stack import Stack

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]

CONCURRENT = 10


def test_ten_concurrent_submissions_with_one_key_make_one_job(
    make_stack: Callable[..., Stack], figures: dict[str, Any]
) -> None:
    # Given the API on several gunicorn processes and threads
    stack = make_stack(env={"WEB_CONCURRENCY": "3", "WEB_THREADS": "4"})
    stack.start_web()
    stack.start_worker("jobs", concurrency=1)
    api = stack.client()
    barrier = threading.Barrier(CONCURRENT)
    answers: list[tuple[int, dict[str, Any]]] = []
    lock = threading.Lock()

    def submit() -> None:
        # A session per thread: requests.Session is not thread-safe.
        from tests.faults.stack import Api

        client = Api(api.base_url, api.session.headers["Authorization"].split()[1])
        barrier.wait()
        response = client.post(
            "/api/jobs/",
            json={"job_name": "api.tasks.hello_world", "payload": {"message": "once"}},
            headers={"Idempotency-Key": "fault-6-key"},
        )
        with lock:
            answers.append((response.status_code, response.json()))

    # When ten clients send the same request with the same key at the same moment
    threads = [threading.Thread(target=submit) for _ in range(CONCURRENT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then exactly one job exists; every accepted answer names it, the rest were told to retry
    jobs = stack.sql("SELECT id FROM jobs_job")
    assert len(jobs) == 1
    job_id = str(jobs[0][0])
    # A replay answers like the first request (202, the same job).
    accepted = [body["id"] for code, body in answers if code == 202]
    in_progress = [body for code, body in answers if code == 409]
    assert len(accepted) + len(in_progress) == CONCURRENT, answers
    assert set(accepted) == {job_id}
    assert all(body["error"]["code"] == "idempotency_key_in_progress" for body in in_progress)
    # A retry after the race returns the same job.
    again = api.post("/api/jobs/", json={"job_name": "api.tasks.hello_world", "payload": {"message": "once"}},
                     headers={"Idempotency-Key": "fault-6-key"})
    assert again.json()["id"] == job_id
    assert api.wait(job_id)["status"] == "SUCCESS"
    figures.update(concurrent=CONCURRENT, jobs_created=len(jobs), accepted=len(accepted),
                   told_to_retry=len(in_progress))
