"""Idempotency-Key answers only the request it was first sent with, headers included: the same key
and body with another `Cancel-After` (another deadline) is 422, while `Prefer: wait`, which
changes only how long the answer waits, replays; a key saved before headers were compared
replays an honest retry, whatever its headers."""
from __future__ import annotations

from collections.abc import Callable

import pytest

from jobs.models import IdempotencyKey, Job
from tests.conftest import Api

JOB = {"job_name": "api.tasks.hello_world", "payload": {"message": "once"}}
BATCH = {"jobs": [JOB, {**JOB, "payload": {"message": "twice"}}]}
KEY = {"Idempotency-Key": "order-9"}


@pytest.mark.parametrize(
    ("first", "then", "said"),
    [
        ({}, {"Cancel-After": "5"}, "(then none, now Cancel-After: 5s)"),
        ({"Cancel-After": "5"}, {}, "(then Cancel-After: 5s, now none)"),
        ({"Cancel-After": "5m"}, {"Cancel-After": "5"}, "(then Cancel-After: 300s, now Cancel-After: 5s)"),
    ],
    ids=["without-then-with", "with-then-without", "another-value"],
)
@pytest.mark.parametrize("path", ["/api/jobs/", "/api/jobs/batch/"], ids=["job", "batch"])
def test_a_repeat_with_another_cancel_after_is_422(
    make_api: Callable[..., Api], path: str, first: dict[str, str], then: dict[str, str], said: str
) -> None:
    # Given a submission with a key, with or without Cancel-After
    api = make_api()
    body = JOB if path == "/api/jobs/" else BATCH
    accepted = api.post(path, json=body, headers={**KEY, **first})
    assert accepted.status_code == 202, accepted.text
    deadlines = _deadlines(api, accepted.json())

    # When the same key and body come with another Cancel-After (another deadline)
    response = api.post(path, json=body, headers={**KEY, **then})

    # Then it is refused as a reused key, saying the headers differ, and makes nothing
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "idempotency_key_reused"
    assert f"headers differ {said}" in error["message"]
    assert Job.objects.count() == len(deadlines)
    # And the first jobs keep their deadline; the first request, repeated, still replays
    assert _deadlines(api, accepted.json()) == deadlines
    again = api.post(path, json=body, headers={**KEY, **first})
    assert again.status_code == 202, again.text
    assert _ids(again.json()) == _ids(accepted.json())


def test_the_same_cancel_after_written_otherwise_replays(make_api: Callable[..., Api]) -> None:
    # Given a job submitted with Cancel-After: 5m
    api = make_api()
    first = api.post("/api/jobs/", json=JOB, headers={**KEY, "Cancel-After": "5m"})
    assert first.status_code == 202

    # When it is repeated with Cancel-After: 300 (the same duration)
    again = api.post("/api/jobs/", json=JOB, headers={**KEY, "Cancel-After": "300"})

    # Then it answers the first job
    assert again.status_code == 202, again.text
    assert again.json()["id"] == first.json()["id"]
    assert Job.objects.count() == 1


@pytest.mark.parametrize(
    ("first", "then"),
    [({}, {"Prefer": "wait=1"}), ({"Prefer": "wait=1"}, {}), ({"Prefer": "wait=1"}, {"Prefer": "wait=2"})],
    ids=["without-then-with", "with-then-without", "another-value"],
)
def test_a_repeat_with_another_prefer_wait_replays(
    make_api: Callable[..., Api], first: dict[str, str], then: dict[str, str]
) -> None:
    # Given a job submitted with a key, asking or not to wait for it
    api = make_api()
    accepted = api.post("/api/jobs/", json=JOB, headers={**KEY, **first})
    assert accepted.status_code == 202

    # When it is repeated waiting otherwise (how long the answer waits, not what it makes)
    again = api.post("/api/jobs/", json=JOB, headers={**KEY, **then})

    # Then it answers the first job
    assert again.status_code == 202, again.text
    assert again.json()["id"] == accepted.json()["id"]
    assert Job.objects.count() == 1


def test_the_starter_endpoint_which_reads_no_cancel_after_replays_whatever_it_says(
    make_api: Callable[..., Api],
) -> None:
    # Given a job submitted to the starter's endpoint, which makes no deadline of a Cancel-After
    api = make_api()
    first = api.post("/api/job/", json=JOB, headers={**KEY, "Cancel-After": "5"})
    assert first.status_code == 202

    # When it is repeated without one
    again = api.post("/api/job/", json=JOB, headers=KEY)

    # Then it is the same request, and answers the first job
    assert again.status_code == 202, again.text
    assert again.json()["task_id"] == first.json()["task_id"]
    assert Job.objects.count() == 1


@pytest.mark.parametrize("endpoint", ["job", None], ids=["previous-build", "before-endpoints"])
@pytest.mark.parametrize("cancel_after", [{}, {"Cancel-After": "5"}], ids=["without", "with"])
def test_a_key_saved_before_headers_were_compared_replays_an_honest_retry(
    make_api: Callable[..., Api], endpoint: str | None, cancel_after: dict[str, str]
) -> None:
    # Given a job whose key was saved before the upgrade (no headers on its row, nor, before
    # that, an endpoint)
    api = make_api()
    first = api.post("/api/jobs/", json=JOB, headers={**KEY, **cancel_after})
    assert first.status_code == 202
    saved = IdempotencyKey.objects.filter(owner=api.client, key=KEY["Idempotency-Key"])
    assert saved.update(headers=None, endpoint=endpoint) == 1

    # When the client retries it after the upgrade, as it sent it
    again = api.post("/api/jobs/", json=JOB, headers={**KEY, **cancel_after})

    # Then it answers the first job, as before
    assert again.status_code == 202, again.text
    assert again.json()["id"] == first.json()["id"]
    assert Job.objects.count() == 1


def _ids(answer: dict[str, object]) -> list[object]:
    """The job ids of an answer: a batch's in order, or one job's."""
    if "jobs" in answer:
        return [job["id"] for job in answer["jobs"]]  # type: ignore[attr-defined]
    return [answer["id"]]


def _deadlines(api: Api, answer: dict[str, object]) -> list[object]:
    """The deadline of each job of an answer, as the API shows it now."""
    return [api.get(f"/api/jobs/{job_id}/").json()["deadline"] for job_id in _ids(answer)]
