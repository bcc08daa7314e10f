"""Idempotency-Key: a repeat creates nothing; a different body is 422; in flight is 409."""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from jobs.models import IdempotencyKey, Job
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
    # The first request has claimed the key but not yet created its job.
    IdempotencyKey.objects.create(
        owner=api.client, key="k", fingerprint=_fingerprint(BODY), job=None
    )

    response = api.post("/api/jobs/", json=BODY, headers={"Idempotency-Key": "k"})

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_key_in_progress"
    assert Job.objects.count() == 0


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


def _fingerprint(body: dict[str, object]) -> str:
    from jobs.idempotency import request_fingerprint

    return request_fingerprint(body)


