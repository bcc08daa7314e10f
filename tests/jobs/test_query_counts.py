"""The hot endpoints cost a fixed, small number of SQL queries (see docs/benchmarks.md).

Through Django's test client in this process, so CaptureQueriesContext sees every query the
request makes; the rows are committed (transactional_db) so the publish after commit runs for
real, against this run's broker, and the session's worker consumes it.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import Client as DjangoClient
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.services import api_key_create, client_create
from examples.receiver import Receiver
from jobs import dispatch, hand_overs, tasks
from jobs.models import Job

# auth (key + client in one join, when the key check is not remembered), and the INSERT, which
# checks the unfinished-jobs cap itself (autocommit: no BEGIN/COMMIT round trips around it).
SUBMIT_MAX_QUERIES = 2
# with an Idempotency-Key, in one transaction (BEGIN, COMMIT): the key's lock, its row (read
# with its job; its endpoint is a column of it, no query of its own), the job's INSERT and the
# key's; a replay stops at the key's row.
KEYED_SUBMIT_MAX_QUERIES = 6
KEYED_REPLAY_MAX_QUERIES = 4
# the job (the key check is remembered per process for API_KEY_CACHE_SECONDS), or the key
# check and the job when it is not.
POLL_MAX_QUERIES = 2
# auth and the page (cursor pagination: no COUNT).
LIST_MAX_QUERIES = 2
# A step's run on the worker, each query a round trip on its hot path. A first step: its start in
# one transaction (BEGIN, the job's row locked, the conditional UPDATE that starts it and takes
# the step's lease, the event's lock and row, the webhook endpoints read, COMMIT), then its finish
# (BEGIN, UPDATE, the event's lock and row, COMMIT).
FIRST_STEP_RUN_QUERIES = 12
# A handed-over last step: its start (one conditional UPDATE, which takes the lease too), then its
# finish, as above.
HANDED_OVER_STEP_RUN_QUERIES = 7

HELLO = {"job_name": "api.tasks.hello_world", "payload": {"message": "q"}}


@pytest.fixture
def http(transactional_db: Any, celery_worker: str) -> DjangoClient:
    key = api_key_create(client=client_create(name="query-counts"))
    return DjangoClient(HTTP_AUTHORIZATION=f"Bearer {key}")


def _submit(http: DjangoClient, **extra: Any) -> Any:
    return http.post("/api/jobs/", {**HELLO, **extra}, content_type="application/json")


def test_submit_takes_a_fixed_few_queries(
    http: DjangoClient, django_assert_max_num_queries: Callable[..., Any]
) -> None:
    _submit(http)  # first use: connection set-up is not a per-request cost

    with django_assert_max_num_queries(SUBMIT_MAX_QUERIES):
        response = _submit(http)

    assert response.status_code == 202, response.content


def test_a_keyed_submit_and_its_replay_take_a_fixed_few_queries(
    http: DjangoClient, django_assert_max_num_queries: Callable[..., Any]
) -> None:
    def keyed() -> Any:
        headers = {"Idempotency-Key": "order-1"}
        return http.post("/api/jobs/", HELLO, content_type="application/json", headers=headers)

    _submit(http)

    with django_assert_max_num_queries(KEYED_SUBMIT_MAX_QUERIES):
        first = keyed()
    with django_assert_max_num_queries(KEYED_REPLAY_MAX_QUERIES):
        again = keyed()

    assert first.status_code == again.status_code == 202, again.content
    assert again.json()["id"] == first.json()["id"]


def test_submit_with_a_callback_takes_no_more_queries(
    http: DjangoClient, django_assert_max_num_queries: Callable[..., Any]
) -> None:
    receiver = Receiver().start()  # loopback is allowed in the test settings
    try:
        _submit(http)

        with django_assert_max_num_queries(SUBMIT_MAX_QUERIES):
            response = _submit(http, callback_url=receiver.url)
    finally:
        receiver.stop()

    assert response.status_code == 202, response.content


def test_submit_cost_does_not_grow_with_the_clients_jobs(http: DjangoClient) -> None:
    # Given a client with a few jobs already, when it submits again
    for _ in range(5):
        assert _submit(http).status_code == 202
    with CaptureQueriesContext(connection) as few:
        _submit(http)
    for _ in range(20):
        assert _submit(http).status_code == 202

    # then the submission costs the same number of queries
    with CaptureQueriesContext(connection) as many:
        _submit(http)
    assert len(many) == len(few)


def test_poll_is_one_read_once_the_key_was_checked(http: DjangoClient) -> None:
    job_id = _submit(http).json()["id"]
    http.get(f"/api/jobs/{job_id}/")

    with CaptureQueriesContext(connection) as queries:
        response = http.get(f"/api/jobs/{job_id}/")

    assert response.status_code == 200
    assert [q["sql"] for q in queries if "core_apikey" in q["sql"]] == []
    assert len(queries) == 1, [q["sql"] for q in queries]


def test_an_unremembered_key_check_is_one_query_with_its_client(
    http: DjangoClient, settings: Any
) -> None:
    settings.API_KEY_CACHE_SECONDS = 0
    job_id = _submit(http).json()["id"]
    http.get(f"/api/jobs/{job_id}/")

    with CaptureQueriesContext(connection) as queries:
        response = http.get(f"/api/jobs/{job_id}/")

    assert response.status_code == 200
    assert len(queries) <= POLL_MAX_QUERIES, [q["sql"] for q in queries]
    auth = [q["sql"] for q in queries if "core_apikey" in q["sql"]]
    assert len(auth) == 1 and "core_client" in auth[0]


def test_list_pages_take_a_fixed_few_queries(
    http: DjangoClient, django_assert_max_num_queries: Callable[..., Any]
) -> None:
    for _ in range(3):
        _submit(http)
    http.get("/api/jobs/")

    with django_assert_max_num_queries(LIST_MAX_QUERIES):
        jobs = http.get("/api/jobs/?page_size=2")
    with django_assert_max_num_queries(LIST_MAX_QUERIES):
        following = http.get(jobs.json()["next"])
    with django_assert_max_num_queries(LIST_MAX_QUERIES):
        results = http.get("/api/results/")

    assert jobs.status_code == following.status_code == results.status_code == 200



def test_an_api_processs_lock_bound_costs_a_submission_and_a_poll_no_query(
    http: DjangoClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def counted() -> tuple[int, int]:
        connection.close()  # the next request connects with the options as they are now
        job_id = _submit(http).json()["id"]  # connection set-up, key check remembered
        with CaptureQueriesContext(connection) as submitted:
            assert _submit(http).status_code == 202
        with CaptureQueriesContext(connection) as polled:
            assert http.get(f"/api/jobs/{job_id}/").status_code == 200
        return len(submitted), len(polled)

    # Given the counts of a process whose connections wait for locks for ever
    unbounded = counted()

    # When its connections bound their lock waits, as an API process's do (core/settings/base.py)
    monkeypatch.setitem(connection.settings_dict["OPTIONS"], "options", "-c lock_timeout=1000")
    bounded = counted()

    # Then a submission and a poll make the same queries: the bound is set as a connection opens
    assert bounded == unbounded, (bounded, unbounded)
    with connection.cursor() as cursor:
        cursor.execute("SHOW lock_timeout")
        assert cursor.fetchone()[0] == "1s"


def _step_run_queries(job: Job) -> list[str]:
    """The queries of a run of the job's next step, its message delivered once, in this process."""
    kwargs = dispatch.job_signatures(job=job)[0].kwargs
    with CaptureQueriesContext(connection) as queries:
        state = tasks.job_run_step.apply(args=(job.step_input,), kwargs=kwargs).state
    assert state == "SUCCESS"
    assert Job.objects.get(pk=job.pk).status == Job.Status.SUCCESS
    return [query["sql"] for query in queries]


def test_a_steps_run_takes_a_fixed_few_queries(transactional_db: Any) -> None:
    # Given a job of one step, and a checklist job whose last step was handed over, each waiting
    # for its message (never published: the test runs it itself, once)
    owner = client_create(name="step-run-queries")
    first = Job.objects.create(owner=owner, job_name=HELLO["job_name"], payload=HELLO["payload"],
                               dispatched_at=timezone.now())
    handed = Job.objects.create(owner=owner, job_name="api.tasks.generate_checklist_from_guidelines",
                                payload={"guidelines": "Sign."}, status=Job.Status.STARTED, started_at=timezone.now())
    checklist = {"summary": "Sign.", "checklist": [{"task": "Sign."}]}
    assert hand_overs.job_step_hand_over(job_id=handed.pk, step=2, step_input=checklist, dispatched_at=timezone.now())
    handed.refresh_from_db()

    # When each runs its step, then each run costs the same few round trips: taking the step's
    # lease is part of its start's UPDATE, not a query of its own
    first_run, handed_run = _step_run_queries(first), _step_run_queries(handed)
    assert len(first_run) == FIRST_STEP_RUN_QUERIES, first_run
    assert len(handed_run) == HANDED_OVER_STEP_RUN_QUERIES, handed_run
