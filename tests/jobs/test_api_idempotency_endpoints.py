"""Idempotency-Key is bound to the endpoint it was first sent to: the same key and body sent to
another is 422, a repeat on its own replays, and a key saved before keys were bound (no endpoint)
replays as it did."""
from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from jobs.models import IdempotencyKey, Job
from tests.conftest import Api

JOB = {"job_name": "api.tasks.hello_world", "payload": {"message": "once"}}
# One body each endpoint accepts, each reading its own fields: the single submissions ignore
# `jobs`, the batch ignores `job_name` and `payload`.
BOTH = {**JOB, "jobs": [{**JOB, "payload": {"message": "in the batch"}}, JOB]}
PATHS = {"job": "/api/jobs/", "batch": "/api/jobs/batch/", "legacy": "/api/job/"}


@pytest.mark.parametrize(("first", "then"), list(itertools.permutations(PATHS, 2)))
def test_a_key_sent_again_to_another_endpoint_is_422(
    make_api: Callable[..., Api], first: str, then: str
) -> None:
    # Given a request to one endpoint with a key
    api = make_api()
    headers = {"Idempotency-Key": "order-7"}
    assert api.post(PATHS[first], json=BOTH, headers=headers).status_code == 202
    made = Job.objects.count()

    # When the same body with the same key goes to another endpoint
    response = api.post(PATHS[then], json=BOTH, headers=headers)

    # Then it is refused as a reused key, naming where the key was used, and makes nothing
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "idempotency_key_reused"
    assert f"different request, to POST {PATHS[first]};" in error["message"]
    assert Job.objects.count() == made
    # And the first endpoint still replays it
    assert api.post(PATHS[first], json=BOTH, headers=headers).status_code == 202
    assert Job.objects.count() == made


def test_a_repeat_to_another_endpoint_that_would_refuse_the_body_is_refused_not_replayed(
    make_api: Callable[..., Api],
) -> None:
    # Given a job accepted with a key, its body carrying a batch the batch endpoint refuses
    api = make_api()
    body = {**JOB, "jobs": [{"job_name": "nope"}]}
    first = api.post("/api/jobs/", json=body, headers={"Idempotency-Key": "k"})
    assert first.status_code == 202

    # When the body goes to the batch endpoint with the same key
    response = api.post("/api/jobs/batch/", json=body, headers={"Idempotency-Key": "k"})

    # Then the batch's refusal is the answer, not the job answered as if it were the batch
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_batch"
    assert Job.objects.count() == 1


def test_a_batch_of_one_replays_as_a_batch_and_is_refused_as_a_single_submission(
    make_api: Callable[..., Api],
) -> None:
    # Given a batch of one job sent with a key
    api = make_api()
    body = {**JOB, "jobs": [JOB]}
    headers = {"Idempotency-Key": "one"}
    first = api.post("/api/jobs/batch/", json=body, headers=headers)
    assert first.status_code == 202

    # When it is repeated, and sent with the same key to the single submission endpoint
    again = api.post("/api/jobs/batch/", json=body, headers=headers)
    single = api.post("/api/jobs/", json=body, headers=headers)

    # Then the repeat answers the batch; the single submission is refused
    assert again.status_code == 202
    assert [job["id"] for job in again.json()["jobs"]] == [job["id"] for job in first.json()["jobs"]]
    assert single.status_code == 422, single.text
    assert single.json()["error"]["code"] == "idempotency_key_reused"
    assert Job.objects.count() == 1


@pytest.mark.parametrize("path", PATHS.values(), ids=PATHS.keys())
def test_a_key_saved_before_keys_named_their_endpoint_still_replays(
    make_api: Callable[..., Api], path: str
) -> None:
    # Given a request whose key was saved before the upgrade (no endpoint on its row)
    api = make_api()
    headers = {"Idempotency-Key": "before"}
    first = api.post(path, json=BOTH, headers=headers)
    assert first.status_code == 202
    assert IdempotencyKey.objects.filter(owner=api.client, key="before").update(endpoint=None) == 1

    # When the client retries it after the upgrade
    again = api.post(path, json=BOTH, headers=headers)

    # Then it answers what the first made, as before
    assert again.status_code == 202, again.text
    assert _ids(again.json()) == _ids(first.json())
    assert Job.objects.count() == (2 if path == PATHS["batch"] else 1)


def test_a_key_past_its_ttl_is_bound_to_the_request_that_reused_it(make_api: Callable[..., Api]) -> None:
    # Given a key first sent with one job, past its TTL
    api = make_api()
    first = api.post(PATHS["job"], json=BOTH, headers={"Idempotency-Key": "reused"})
    assert first.status_code == 202
    expired = timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_KEY_TTL_SECONDS + 1)
    assert IdempotencyKey.objects.filter(owner=api.client, key="reused").update(created_at=expired) == 1

    # When it is sent again with a batch and another header
    headers = {"Idempotency-Key": "reused", "Cancel-After": "60"}
    batch = api.post(PATHS["batch"], json=BOTH, headers=headers)

    # Then it makes the batch, and the key answers that request from then on: replayed there,
    # refused with the first's endpoint or without the header
    assert batch.status_code == 202, batch.text
    assert Job.objects.count() == 3
    assert _ids(api.post(PATHS["batch"], json=BOTH, headers=headers).json()) == _ids(batch.json())
    assert api.post(PATHS["job"], json=BOTH, headers=headers).status_code == 422
    assert api.post(PATHS["batch"], json=BOTH, headers={"Idempotency-Key": "reused"}).status_code == 422
    assert Job.objects.count() == 3


def _ids(answer: dict[str, object]) -> list[object]:
    """The job ids of an answer: a batch's in order, one job's, or the starter's `task_id`."""
    if "jobs" in answer:
        return [job["id"] for job in answer["jobs"]]  # type: ignore[attr-defined]
    return [answer.get("id", answer.get("task_id"))]
