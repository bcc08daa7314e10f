"""A job's deliveries once the job is pruned (past JOB_RETENTION_DAYS) while its webhook events are
kept (WEBHOOK_EVENT_RETENTION_DAYS, longer): the job's own list shows them for as long as the
client's list of deliveries does. It answered 404 while `GET /api/deliveries/?job=` listed them."""
from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.utils import timezone

from jobs import retention
from jobs.models import Job
from tests.conftest import Api
from webhooks import outbox
from webhooks.models import Delivery, DeliveryAttempt, Event

CALLBACK = "http://127.0.0.1:9/hook"


def _finished_and_delivered(api: Api, *, days_ago: int) -> Job:
    """A job of `api`'s client that succeeded `days_ago` days ago, its job.succeeded delivered to
    its callback at the first attempt."""
    at = timezone.now() - timedelta(days=days_ago)
    job = Job.objects.create(owner=api.client, job_name="api.tasks.hello_world", status=Job.Status.SUCCESS,
                             callback_url=CALLBACK, created_at=at, finished_at=at)
    event = Event.objects.create(owner=api.client, subject_id=job.id, event_type="job.succeeded", body=b"{}",
                                 created_at=at)
    delivery = Delivery.objects.create(event=event, owner=api.client, subject_id=job.id, url=CALLBACK,
                                       state=Delivery.State.SUCCEEDED, created_at=at, next_attempt_at=at,
                                       attempt_count=1)
    DeliveryAttempt.objects.create(delivery=delivery, url=CALLBACK, number=1, started_at=at, finished_at=at,
                                   status_code=200)
    return job


def _seen(api: Api, job_id: Any) -> tuple[int, list[int], list[int]]:
    """What the client sees of the job: its GET's status, then the ids of the deliveries its own
    list shows (None for a 404) and those the client's list of deliveries filtered to it shows."""
    own = api.get(f"/api/jobs/{job_id}/deliveries/")
    listed = api.get(f"/api/deliveries/?job={job_id}")
    assert listed.status_code == 200, listed.text
    own_ids = [d["id"] for d in own.json()["results"]] if own.status_code == 200 else None
    return api.get(f"/api/jobs/{job_id}/").status_code, own_ids, [d["id"] for d in listed.json()["results"]]


def test_a_pruned_jobs_deliveries_are_listed_as_long_as_they_are_kept(
    make_api: Callable[..., Api], settings: Any
) -> None:
    # Given jobs kept 7 days and webhook events 30, and a job delivered 10 days ago
    settings.JOB_RETENTION_DAYS, settings.WEBHOOK_EVENT_RETENTION_DAYS = 7, 30
    api = make_api()
    job = _finished_and_delivered(api, days_ago=10)
    [delivery_id] = Delivery.objects.filter(subject_id=job.id).values_list("pk", flat=True)

    # When the housekeeping prunes the job
    assert retention.jobs_retention_apply()["jobs"] == 1

    # Then the job is gone, but its deliveries are listed at its own address as at the client's
    # list, with their attempts
    assert _seen(api, job.id) == (404, [delivery_id], [delivery_id])
    [shown] = api.get(f"/api/jobs/{job.id}/deliveries/").json()["results"]
    assert [attempt["status_code"] for attempt in shown["attempts"]] == [200]

    # ...until their events' retention prunes them too: then both lists have nothing, the job's
    # own answering 404, as for any id it never knew
    assert outbox.events_prune(older_than=timezone.now() - timedelta(days=9)) == 1
    assert _seen(api, job.id) == (404, None, [])
    assert api.get("/api/jobs/00000000-0000-4000-8000-000000000000/deliveries/").status_code == 404


def test_another_clients_pruned_job_shows_no_deliveries(make_api: Callable[..., Api], settings: Any) -> None:
    # Given another client's job, delivered 10 days ago and pruned since
    settings.JOB_RETENTION_DAYS, settings.WEBHOOK_EVENT_RETENTION_DAYS = 7, 30
    owner, other = make_api(), make_api()
    job = _finished_and_delivered(owner, days_ago=10)
    retention.jobs_retention_apply()

    # When this client asks for its deliveries, then it is told there is no such job
    answer = other.get(f"/api/jobs/{job.id}/deliveries/")
    assert (answer.status_code, answer.json()["error"]["code"]) == (404, "not_found")
