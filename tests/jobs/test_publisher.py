"""The publisher: it publishes each handed-over job once, leaves a job revoked or claimed by the
sweeper meanwhile, and keeps the ids a failed claim held."""
from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db import DatabaseError
from django.utils import timezone

from core import cache_redis, logs
from jobs import dispatch, publisher
from jobs.models import Job
from tests.conftest import Api

pytestmark = pytest.mark.django_db(transaction=True)


def waiting_job(api: Api) -> Job:
    """A job in the state a handed-over one is in before the publisher takes it."""
    # Scheduled, so that nothing publishes it; then due, as a handed-over job is
    job = api.submit("api.tasks.hello_world", {"message": "waiting"},
                     run_at=(timezone.now() + timedelta(hours=1)).isoformat())
    Job.objects.filter(pk=job["id"]).update(run_at=None)
    return Job.objects.get(pk=job["id"])


def test_a_handed_over_job_is_published_once(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    published: list[uuid.UUID] = []
    monkeypatch.setattr(dispatch, "job_publish", lambda job: published.append(job.id))
    job = waiting_job(api)

    assert dispatch.jobs_publish_handed_over(handed=[(job.id, {}), (job.id, {})]) == 1
    assert dispatch.jobs_publish_handed_over(handed=[(job.id, {})]) == 0  # claimed: the sweeper's or ours

    assert published == [job.id]
    assert Job.objects.get(pk=job.id).dispatched_at is not None


def test_a_job_revoked_before_the_publisher_takes_it_is_not_published(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    published: list[uuid.UUID] = []
    monkeypatch.setattr(dispatch, "job_publish", lambda job: published.append(job.id))
    job = waiting_job(api)
    assert api.post(f"/api/jobs/{job.id}/cancel/").status_code in (200, 202)

    assert dispatch.jobs_publish_handed_over(handed=[(job.id, {})]) == 0
    assert published == []


def test_ids_whose_claim_failed_go_back_to_the_head_of_the_list(monkeypatch: pytest.MonkeyPatch) -> None:
    client = cache_redis.client()
    key = f"test:handover:{uuid.uuid4().hex}"
    client.rpush(key, "later")

    def refused(**kwargs: Any) -> int:
        raise DatabaseError("the database went away")

    monkeypatch.setattr(dispatch, "jobs_publish_handed_over", refused)
    monkeypatch.setattr(publisher, "RETRY_SECONDS", 0)
    taken = [f'{{"job":"{uuid.uuid4()}","log":{{}}}}'.encode() for _ in range(2)]

    publisher.Publisher().publish(client, key, taken)

    assert client.lrange(key, 0, -1) == [*taken, b"later"]
    client.delete(key)


def test_a_handed_over_job_is_published_with_the_log_context_it_was_submitted_in(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a job handed over from a request with its request id and client in the log context
    job = waiting_job(api)
    with logs.bound(request_id="trace-1", client="c-1"):
        entry = dispatch.handover_entry(job=job)
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(dispatch, "job_publish", lambda job: seen.append(logs.propagated()))

    # When the publisher publishes it, outside any request
    dispatch.jobs_publish_handed_over(handed=[dispatch.handover_parse(entry.encode())])

    # Then its message carries that context on (tests/core/test_logs.py follows it end to end)
    assert seen == [{"request_id": "trace-1", "client": "c-1"}]
    assert logs.propagated() == {}


def test_a_submission_hands_its_job_over_while_a_publisher_is_alive_and_publishes_itself_otherwise(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the session's worker serving `maintenance`: its publisher says it is alive
    handed = api.submit("api.tasks.hello_world", {"message": "handed over"})

    # When no publisher is alive (a deployment with no worker on `maintenance`)
    monkeypatch.setattr(dispatch, "publisher_alive_key", lambda: f"test:no-publisher:{uuid.uuid4().hex}")
    monkeypatch.setattr(dispatch, "_publisher_checked", (float("-inf"), False))
    itself = api.submit("api.tasks.hello_world", {"message": "published by the request"})

    # Then both run: the first claimed by the publisher after its insert, the second published
    # by its request, claimed by the insert itself
    for job in (handed, itself):
        assert api.wait(job["id"])["status"] == "SUCCESS"
    handed_row, itself_row = Job.objects.get(pk=handed["id"]), Job.objects.get(pk=itself["id"])
    assert handed_row.dispatched_at > handed_row.created_at
    assert itself_row.dispatched_at == itself_row.created_at
