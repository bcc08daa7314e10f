"""A greedy client costs only itself: with hundreds of its jobs queued (hour-long ones among them),
another client's job still runs within seconds, and the greedy client's own jobs wait, in order,
without holding a worker (the running cap, JOB_MAX_RUNNING_PER_CLIENT)."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.faults.stack import Stack, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

LONG = "api.tasks.long_running_task"
HELLO = "api.tasks.hello_world"
FINAL = {"SUCCESS", "FAILURE", "REVOKED"}


def make_run_stack(make_stack: Callable[..., Stack], *, long: int = 1) -> Stack:
    """`make run`'s shape: a jobs worker of 2 processes, a long-jobs worker (of 1), deliveries,
    beat; and the running cap's default for that worker, half of its processes."""
    stack = make_stack(env={"JOB_MAX_RUNNING_PER_CLIENT": "1", "API_SUBMIT_RATE_PER_MINUTE": "600"})
    stack.start_web()
    stack.start_worker("jobs", queues="jobs", concurrency=2)
    stack.start_worker("long", queues="jobs_long", concurrency=long)
    stack.start_worker("deliveries", queues="webhooks", concurrency=1)
    stack.start_beat()
    return stack


def running_of(stack: Stack, owner: str) -> int:
    [(count,)] = stack.sql(
        f"SELECT count(*) FROM jobs_job j JOIN core_client c ON c.id = j.owner_id "
        f"WHERE c.name = '{owner}' AND j.status IN ('STARTED', 'RETRY')"
    )
    return int(count)


def test_another_clients_job_runs_within_seconds_of_a_greedy_backlog(
    make_stack: Callable[..., Stack], figures: dict[str, Any]
) -> None:
    # Given a client holding 50 long jobs (a minute each) and 100 short ones
    stack = make_run_stack(make_stack)
    greedy, polite = stack.client("greedy"), stack.client("polite")
    backlog = [greedy.submit(LONG, {"duration": 60})["id"] for _ in range(50)]
    backlog += [greedy.submit(HELLO, {"message": str(n)})["id"] for n in range(100)]
    greedy.wait(backlog[0], until=lambda job: job["status"] == "STARTED", timeout=30)

    # When the other client submits a job
    started = time.monotonic()
    job = polite.submit(HELLO, {"message": "polite"})
    done = polite.wait(job["id"], until=lambda job: job["status"] in FINAL, timeout=30)
    elapsed = time.monotonic() - started

    # Then it succeeds within seconds, and the greedy client never ran more than its cap
    assert done["status"] == "SUCCESS"
    assert elapsed < 5, f"the polite client's job took {elapsed:.2f} s"
    samples = []
    for _ in range(20):
        samples.append(running_of(stack, "greedy"))
        time.sleep(0.1)
    assert max(samples) <= 1
    figures.update(polite_job_seconds=round(elapsed, 3), greedy_backlog=len(backlog), greedy_running_max=max(samples))
    for job_id in backlog:  # the rest is not this test's to wait for
        greedy.post(f"/api/jobs/{job_id}/cancel/")


def test_jobs_over_the_cap_wait_and_keep_their_order(make_stack: Callable[..., Stack]) -> None:
    # Given a client with more jobs than its cap lets run at once, and workers for more
    stack = make_run_stack(make_stack, long=3)
    api = stack.client("ordered")
    ids = [api.submit(LONG, {"duration": 1, "message": str(n)})["id"] for n in range(5)]

    # When they have all run
    jobs = [api.wait(job_id, until=lambda job: job["status"] in FINAL, timeout=60) for job_id in ids]

    # Then every one succeeded, one after another, in the order they were submitted
    assert [job["status"] for job in jobs] == ["SUCCESS"] * 5
    starts = [job["started_at"] for job in jobs]
    assert starts == sorted(starts)
    for earlier, later in zip(jobs, jobs[1:], strict=False):
        assert later["started_at"] >= earlier["finished_at"]
    wait_for(lambda: running_of(stack, "ordered") == 0, timeout=5, what="no job left running")
