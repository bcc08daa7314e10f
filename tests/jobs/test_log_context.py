"""A job's messages carry the log context of the request that submitted it (its X-Request-ID and
client, core/logs.py), whoever publishes them: the request itself, or a worker as another job of
its owner ends and frees a place under the running cap; and the lines about a job that a rule
writes (its deadline, an abandoned job) name its own request."""
from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import structlog
from django.db import transaction
from django.utils import timezone
from kombu import Producer
from structlog.contextvars import merge_contextvars

from core import logs
from core.logs import CONTEXT_HEADER
from core.services import client_create
from jobs import deadlines, hand_overs, tasks, telemetry, transitions
from jobs.models import Job
from tests.conftest import Api

# (the job's id, the log context its message carried), for each job step published.
Published = list[tuple[str, dict[str, Any]]]


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> Iterator[Published]:
    """What would reach the broker, kept here: nothing reaches the suite's worker."""
    sent: Published = []

    def publish(self: Producer, body: Any, *args: Any, headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if headers and headers.get("task") == "jobs.run_step":
            sent.append((body[1]["job_id"], headers.get(CONTEXT_HEADER) or {}))

    monkeypatch.setattr(Producer, "publish", publish)
    yield sent


def test_a_job_published_as_another_ends_carries_its_own_request_id(
    make_api: Callable[..., Api], published: Published, settings: Any
) -> None:
    # Given a client with a running cap of one: its first job running, its second (another
    # request's) sent back to wait for a place, in the transaction that then ends the first: the
    # suite's beat sweeps every second, with a cap of its own (8), and a sweep past the second's
    # grace published it to its broker, not here, before the first ended
    settings.JOB_MAX_RUNNING_PER_CLIENT = 1
    api = make_api()
    first_request, second_request = (f"trace-{uuid.uuid4().hex}" for _ in range(2))
    first = api.post("/api/jobs/", headers={"X-Request-ID": first_request},
                     json={"job_name": "api.tasks.hello_world", "payload": {}}).json()["id"]
    second = api.post("/api/jobs/", headers={"X-Request-ID": second_request},
                      json={"job_name": "api.tasks.hello_world", "payload": {}}).json()["id"]
    assert transitions.job_start(job_id=uuid.UUID(first)) is not None
    with transaction.atomic():
        with pytest.raises(transitions.OverRunningCap):
            transitions.job_start(job_id=uuid.UUID(second))
        assert Job.objects.get(pk=second).dispatched_at is None

        # When the first job ends, in its task's log context (its request's, as its message carried it)
        published.clear()
        with logs.bound(request_id=first_request, client=str(api.client.pk), job_id=first):  # type: ignore[union-attr]
            assert transitions.job_finish(job_id=uuid.UUID(first), status=Job.Status.SUCCESS)

    # Then the second job is published with its own request's id, not the first's
    assert published == [(second, {"request_id": second_request, "client": str(api.client.pk)})]  # type: ignore[union-attr]


def test_a_job_made_outside_a_request_carries_no_request_id(
    make_api: Callable[..., Api], published: Published, settings: Any
) -> None:
    # Given a waiting job made outside any request (the admin, a shell), its owner at its cap, in
    # the transaction that then ends the running job: the suite's beat (its own cap 8) published
    # it to its broker, not here, once past its grace
    settings.JOB_MAX_RUNNING_PER_CLIENT = 1
    api = make_api()
    running = api.post("/api/jobs/", json={"job_name": "api.tasks.hello_world", "payload": {}}).json()["id"]
    transitions.job_start(job_id=uuid.UUID(running))
    with transaction.atomic():
        waiting = Job.objects.create(owner=api.client, job_name="api.tasks.hello_world")

        # When the running job ends in a request's context
        published.clear()
        with logs.bound(request_id="trace-of-another-request", client=str(api.client.pk)):  # type: ignore[union-attr]
            transitions.job_finish(job_id=uuid.UUID(running), status=Job.Status.SUCCESS)

    # Then the waiting job's message names no request
    assert published == [(str(waiting.pk), {"request_id": None, "client": str(api.client.pk)})]  # type: ignore[union-attr]


def test_the_sweepers_publishes_carry_each_jobs_own_request_id(
    make_api: Callable[..., Api], published: Published, settings: Any
) -> None:
    # Given, each submitted by a request of its own: a job the broker refused (waiting for the
    # sweeper), a job whose message was lost (handed to the broker long ago, never started), and
    # a running job whose next step the broker refused
    settings.JOB_DISPATCH_GRACE_SECONDS = 0
    api = make_api()
    requests = {name: f"trace-{name}-{uuid.uuid4().hex}" for name in ("refused", "lost", "step")}
    jobs = {
        name: api.post("/api/jobs/", headers={"X-Request-ID": request_id},
                       json={"job_name": "api.tasks.hello_world", "payload": {}}).json()["id"]
        for name, request_id in requests.items()
    }
    assert transitions.job_start(job_id=uuid.UUID(jobs["step"])) is not None
    assert hand_overs.job_step_hand_over(job_id=uuid.UUID(jobs["step"]), step=1, step_input=None,
                                          dispatched_at=timezone.now())

    # When the sweeper runs, in a task's context of its own (none: it is no request's), in the
    # transaction that made the three wait for it and holds their rows: the suite's beat sweeps
    # every second, and a sweep of its own published a job between this test's setup and its
    # sweep (a step at once, the others once past their grace), to its broker, not here. Its
    # claims skip the rows locked; its release of lost messages waits, then finds them published.
    published.clear()
    with logs.bound(request_id=None, client=None), transaction.atomic():
        assert len(Job.objects.select_for_update().filter(pk__in=jobs.values())) == 3
        Job.objects.filter(pk__in=[jobs["refused"], jobs["step"]]).update(dispatched_at=None)
        Job.objects.filter(pk=jobs["lost"]).update(dispatched_at=timezone.now() - timedelta(days=1))
        tasks.jobs_dispatch_sweep()

    # Then each job was published with its own request's id
    client = str(api.client.pk)  # type: ignore[union-attr]
    assert sorted(published) == sorted(
        (jobs[name], {"request_id": requests[name], "client": client}) for name in requests
    )


@pytest.fixture
def job_lines(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The lines the jobs' transitions write (jobs/telemetry.py), at INFO, with their log context
    (the suite logs at WARNING, where an INFO call writes nothing)."""
    captured = structlog.testing.LogCapture()
    monkeypatch.setattr(telemetry, "log", structlog.wrap_logger(
        None, processors=[merge_contextvars, captured], wrapper_class=structlog.make_filtering_bound_logger(logs.INFO)
    ))
    return captured.entries


@pytest.mark.django_db
def test_a_rules_lines_about_a_job_carry_its_own_request_id(
    job_lines: list[dict[str, Any]], django_capture_on_commit_callbacks: Any
) -> None:
    # Given, each submitted by a request of its own, past their deadlines: a queued job and a
    # running one (uncommitted, in the test's transaction: the suite's beat, enforcing deadlines
    # every few seconds, does not see them)
    owner = client_create(name="log-context")
    past = timezone.now() - timedelta(seconds=1)
    queued = Job.objects.create(owner=owner, job_name="api.tasks.hello_world", request_id="trace-queued",
                                deadline=past, dispatched_at=timezone.now())
    running = Job.objects.create(owner=owner, job_name="api.tasks.hello_world", request_id="trace-running",
                                 deadline=past, dispatched_at=timezone.now(), status=Job.Status.STARTED,
                                 started_at=timezone.now())

    # When the deadline rule runs, in a task's context of its own (no request's)
    with logs.bound(request_id=None, client=None), django_capture_on_commit_callbacks(execute=True):
        deadlines.jobs_cancel_past_deadline()

    # Then the queued job's final line and the running job's cancel line each name its own request
    lines = {(line["event"], str(line["job_id"])): line for line in job_lines}
    assert lines["job finished", str(queued.id)]["request_id"] == "trace-queued"
    assert lines["job finished", str(queued.id)]["error_type"] == "deadline_exceeded"
    assert lines["job cancel requested", str(running.id)]["request_id"] == "trace-running"


@pytest.mark.django_db
def test_another_requests_cancel_keeps_its_own_id_beside_the_jobs(
    job_lines: list[dict[str, Any]], django_capture_on_commit_callbacks: Any
) -> None:
    # Given a queued job submitted by one request (uncommitted: the suite's beat does not see it)
    owner = client_create(name="log-context-cancel")
    job = Job.objects.create(owner=owner, job_name="api.tasks.hello_world", request_id="trace-submit",
                             dispatched_at=timezone.now())

    # When another request of its client cancels it
    with logs.bound(request_id="trace-cancel", client=str(owner.pk)), django_capture_on_commit_callbacks(execute=True):
        transitions.job_cancel(owner=owner, job_id=job.id)

    # Then its final line names the job's request, and keeps the cancel's as by_request_id
    line = next(line for line in job_lines if line["event"] == "job finished")
    assert (line["request_id"], line["by_request_id"]) == ("trace-submit", "trace-cancel")
