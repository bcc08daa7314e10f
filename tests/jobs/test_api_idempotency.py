"""Idempotency-Key: a repeat creates nothing; a different body is 422; in flight is 409; a
request that dies before its job leaves the key free."""
from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import psycopg2
import pytest
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from jobs import sql, submission
from jobs.models import IdempotencyKey, Job, JobCounts
from jobs.submission import SubmissionRequest
from tests.conftest import Api

BODY = {"job_name": "api.tasks.hello_world", "payload": {"message": "once"}}


def test_a_repeat_with_the_same_body_returns_the_same_job(make_api: Callable[..., Api]) -> None:
    api = make_api()
    headers = {"Idempotency-Key": "order-1"}

    first = api.post("/api/jobs/", json=BODY, headers=headers)
    # Same JSON, different key order and spacing: compared as parsed JSON.
    again = api.post(
        "/api/jobs/",
        data=b'{ "payload": {"message": "once"},   "job_name": "api.tasks.hello_world" }',
        headers={**headers, "Content-Type": "application/json"},
    )

    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert Job.objects.count() == 1


def test_a_repeat_with_a_different_body_is_422(make_api: Callable[..., Api]) -> None:
    api = make_api()
    api.post("/api/jobs/", json=BODY, headers={"Idempotency-Key": "k"})

    response = api.post(
        "/api/jobs/", json={**BODY, "payload": {"message": "twice"}}, headers={"Idempotency-Key": "k"}
    )

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert Job.objects.count() == 1


def test_a_repeat_while_the_first_is_in_flight_is_409(make_api: Callable[..., Api]) -> None:
    api = make_api()
    first: list[Job] = []

    def submit_first() -> None:
        # Another process's request: its own connection, its job's INSERT held up below.
        try:
            job, _ = submission.job_submit(
                owner=api.client, request=SubmissionRequest(**BODY), idempotency_key="k", request_body=BODY
            )
            first.append(job)
        finally:
            connection.close()

    # The first request's job waits on its owner's count row (its INSERT's trigger updates it).
    with transaction.atomic():
        JobCounts.objects.select_for_update().get(owner=api.client)
        thread = threading.Thread(target=submit_first)
        thread.start()
        _wait_for_a_lock_wait()
        response = api.post("/api/jobs/", json=BODY, headers={"Idempotency-Key": "k"})
    thread.join(timeout=30)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_key_in_progress"
    again = api.post("/api/jobs/", json=BODY, headers={"Idempotency-Key": "k"})
    assert again.status_code == 202
    assert again.json()["id"] == str(first[0].id)
    assert Job.objects.count() == 1


def _keys_hashing_alike_in_32_bits(owner_id: uuid.UUID) -> tuple[str, str]:
    """Two keys of `owner_id` whose 32-bit hashes are the same (a birthday search): they shared
    one lock when its key was hashed to 32 bits."""
    seen: dict[bytes, str] = {}
    for n in range(2_000_000):
        key = f"key-{n}"
        prefix = hashlib.blake2b(f"{owner_id}\n{key}".encode(), digest_size=4).digest()
        if prefix in seen:
            return seen[prefix], key
        seen[prefix] = key
    raise AssertionError("no two keys share 32 bits")


def test_another_key_in_flight_is_not_409_even_when_the_keys_hash_alike(make_api: Callable[..., Api]) -> None:
    api = make_api()
    key, other_key = _keys_hashing_alike_in_32_bits(api.client.pk)

    def submit_first() -> None:
        # Another process's request: its own connection, its job's INSERT held up below.
        try:
            submission.job_submit(
                owner=api.client, request=SubmissionRequest(**BODY), idempotency_key=key, request_body=BODY
            )
        finally:
            connection.close()

    # Given a request with `key` in flight (its job waits on its owner's count row)
    with ThreadPoolExecutor(max_workers=1) as other, transaction.atomic():
        JobCounts.objects.select_for_update().get(owner=api.client)
        thread = threading.Thread(target=submit_first)
        thread.start()
        _wait_for_a_lock_wait()
        # When a request with another key comes meanwhile (its job waits on the row too)
        response = other.submit(api.post, "/api/jobs/", json=BODY, headers={"Idempotency-Key": other_key})
        time.sleep(0.5)
    thread.join(timeout=30)

    # Then it is not refused as in flight: both make their job
    assert response.result(timeout=30).status_code == 202
    assert Job.objects.count() == 2


@pytest.mark.parametrize(
    ("path", "body"),
    [("/api/jobs/", BODY), ("/api/jobs/batch/", {"jobs": [BODY, BODY]})],
    ids=["job", "batch"],
)
def test_a_key_a_dead_request_left_without_its_job_is_free_again(
    make_api: Callable[..., Api], path: str, body: dict[str, object]
) -> None:
    api = make_api()
    # What a request left when it died (killed, or its database restarted) between committing
    # its key and its job, before both were one transaction: every retry was 409 for 24 h.
    IdempotencyKey.objects.create(owner=api.client, key="order-42", fingerprint=_fingerprint(body), job=None)

    response = api.post(path, json=body, headers={"Idempotency-Key": "order-42"})
    again = api.post(path, json=body, headers={"Idempotency-Key": "order-42"})

    assert response.status_code == again.status_code == 202, response.text
    assert job_ids(again.json()) == job_ids(response.json())  # the same jobs (their state may have moved)
    assert Job.objects.count() == len(body.get("jobs", [body]))


def test_a_submission_cut_off_by_a_database_restart_leaves_its_key_free(
    make_api: Callable[..., Api], monkeypatch: pytest.MonkeyPatch
) -> None:
    api = make_api()

    def killed(job: Job, **_: object) -> None:
        # PostgreSQL goes away while the job is being inserted...
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    def refused() -> None:
        raise psycopg2.OperationalError("connection refused: the database is restarting")

    monkeypatch.setattr(sql, "job_insert_below_cap", killed)
    # ... and is not back yet when the request tries to tidy up.
    monkeypatch.setattr(connection, "get_new_connection", lambda *args: refused())
    with pytest.raises(OperationalError):
        submission.job_submit(
            owner=api.client, request=SubmissionRequest(**BODY), idempotency_key="order-42", request_body=BODY
        )
    monkeypatch.undo()
    connection.close()

    # Once it is back, the client's retry makes the job.
    response = api.post("/api/jobs/", json=BODY, headers={"Idempotency-Key": "order-42"})

    assert response.status_code == 202, response.text
    assert list(Job.objects.values_list("id", flat=True)) == [uuid.UUID(response.json()["id"])]


def test_keys_are_scoped_to_the_client(make_api: Callable[..., Api]) -> None:
    alice, bob = make_api(), make_api()

    a = alice.post("/api/jobs/", json=BODY, headers={"Idempotency-Key": "shared"})
    b = bob.post("/api/jobs/", json=BODY, headers={"Idempotency-Key": "shared"})

    assert a.json()["id"] != b.json()["id"]
    assert Job.objects.count() == 2


def test_a_rejected_request_does_not_burn_the_key(make_api: Callable[..., Api]) -> None:
    api = make_api()
    bad = api.post("/api/jobs/", json={"job_name": "nope"}, headers={"Idempotency-Key": "k2"})
    assert bad.status_code == 400

    good = api.post("/api/jobs/", json=BODY, headers={"Idempotency-Key": "k2"})

    assert good.status_code == 202


def test_the_starter_endpoint_honours_the_key(make_api: Callable[..., Api]) -> None:
    api = make_api()
    body = {"job_name": "api.tasks.hello_world", "payload": {}}

    first = api.post("/api/job/", json=body, headers={"Idempotency-Key": "legacy"})
    again = api.post("/api/job/", json=body, headers={"Idempotency-Key": "legacy"})

    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert Job.objects.count() == 1


def test_concurrent_requests_with_one_key_make_one_job(make_api: Callable[..., Api]) -> None:
    api = make_api()

    def submit(_: int) -> int:
        return Api(api.base_url, api.key).post(
            "/api/jobs/", json=BODY, headers={"Idempotency-Key": "race"}
        ).status_code

    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(submit, range(10)))

    assert Job.objects.filter(owner=api.client).count() == 1
    assert set(statuses) <= {202, 409}
    assert 202 in statuses


def job_ids(answer: dict[str, object]) -> list[object]:
    """The ids of the jobs a submission answered: one job's, or a batch's in order."""
    jobs = answer.get("jobs", [answer])
    return [job["id"] for job in jobs]  # type: ignore[index, union-attr]


def _fingerprint(body: dict[str, object]) -> str:
    from jobs.idempotency import request_fingerprint

    return request_fingerprint(body)


def _wait_for_a_lock_wait(timeout: float = 10) -> None:
    """Until a backend of this database waits for a lock (the in-flight request's INSERT)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            # A transaction sees the statistics as they were when it first read them: read anew.
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0]:
                return
        time.sleep(0.02)
    raise AssertionError(f"no request waited for the count row within {timeout}s")




def test_a_repeat_answers_the_first_job_even_when_the_request_would_no_longer_be_accepted(
    make_api: Callable[..., Api],
) -> None:
    # Given a job accepted with a deadline 1 s ahead, and a batch with the same deadline
    api = make_api()
    deadline = (timezone.now() + timedelta(seconds=1)).isoformat()
    body = {**BODY, "deadline": deadline}
    batch = {"jobs": [body, {**body, "payload": {"message": "two"}}]}
    first = api.post("/api/jobs/", json=body, headers={"Idempotency-Key": "late"})
    first_batch = api.post("/api/jobs/batch/", json=batch, headers={"Idempotency-Key": "late-batch"})
    assert first.status_code == first_batch.status_code == 202

    # When the client repeats them (it never saw the answers) after the deadline has passed
    time.sleep(1.2)
    again = api.post("/api/jobs/", json=body, headers={"Idempotency-Key": "late"})
    again_batch = api.post("/api/jobs/batch/", json=batch, headers={"Idempotency-Key": "late-batch"})

    # Then each repeat answers what the first made, as any repeat does, not a 400 saying the
    # deadline has passed (which would tell the client its job was never accepted)
    assert again.status_code == 202, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again_batch.status_code == 202, again_batch.text
    assert [job["id"] for job in again_batch.json()["jobs"]] == [job["id"] for job in first_batch.json()["jobs"]]
    assert Job.objects.count() == 3
    # A new request with a passed deadline is still refused
    assert api.post("/api/jobs/", json=body, headers={"Idempotency-Key": "new"}).status_code == 400
