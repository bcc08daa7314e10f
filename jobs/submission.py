"""Accepting jobs, one or a batch: validation, the caps, idempotency, and the insert that hands
each job to dispatch once it is committed (at once, or when its run_at comes)."""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pydantic
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core import logs, pause
from core.errors import ApplicationError, TooManyRequests
from core.http import Resolver
from core.limits import client_limit
from core.models import Client
from core.parsers import json_numbers_growth
from jobs import dispatch, idempotency, model_budget, selectors, sql, telemetry
from jobs.models import DEFAULT_WEBHOOK_EVENTS, Job, JobCounts
from jobs.registry import job_type_get
from jobs.types.base import JobType
from webhooks.addresses import callback_hosts_resolve, callback_url_validate
from webhooks.backlog import endpoint_backlog_require_room


@dataclass(frozen=True)
class SubmissionRequest:
    """One job as a client asks for it (the API has checked its shape)."""

    job_name: str
    payload: Any = field(default_factory=dict)
    callback_url: str = ""
    webhook_events: Sequence[str] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    run_at: datetime | None = None
    deadline: datetime | None = None
    # {"max_attempts": int, "backoff_seconds": int}, for retryable types.
    retry: dict[str, int] | None = None
    # Whether the owner's registered webhook endpoints get this job's events too.
    webhook_endpoints: bool = True


def payload_validate(*, job_type: JobType, payload: Any) -> dict[str, Any]:
    """Validate `payload` against the type's schema; 400 with field errors otherwise, 413 when
    it is larger than the type accepts."""
    if not isinstance(payload, dict):
        raise ApplicationError(
            "payload must be a JSON object.",
            code="invalid_payload",
            details={"payload": ["Expected a JSON object."]},
        )
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    size = len(text.encode("utf-8", "surrogatepass"))
    _payload_size_check(job_type, size)
    try:
        job_type.payload_model.model_validate(payload)
    except pydantic.ValidationError as exc:
        field_errors: dict[str, list[str]] = {}
        for error in exc.errors(include_url=False):
            location = ".".join(str(part) for part in error["loc"]) or "payload"
            field_errors.setdefault(location, []).append(error["msg"])
        raise ApplicationError(
            f"The payload is not valid for {job_type.name}.",
            code="invalid_payload",
            details={"payload": field_errors},
        ) from None
    # After the schema, which refuses most such payloads at less cost: 54 KB of 1e308 passed a
    # 64 KiB limit and came back as 2.8 MB.
    _payload_size_check(job_type, size + json_numbers_growth(payload, text, stop_over=job_type.max_payload_bytes - size))
    return payload


def _payload_size_check(job_type: JobType, size: int) -> None:
    """413 when the payload is larger than its type accepts, measured as it is stored."""
    if size > job_type.max_payload_bytes:
        raise ApplicationError(
            f"The payload is {size} bytes (as stored: numbers written out in full); {job_type.name} accepts "
            f"at most {job_type.max_payload_bytes}.",
            code="payload_too_large",
            status_code=413,
            details={"payload_bytes": size, "max_payload_bytes": job_type.max_payload_bytes},
        )


def job_type_require_available(*, job_type: JobType) -> None:
    reason = job_type.unavailable_reason()
    if reason:
        raise ApplicationError(
            f"{job_type.name} is unavailable: {reason}",
            code="job_type_unavailable",
            status_code=400,
            details={"job_name": job_type.name, "reason": reason},
        )


def _invalid(field_name: str, message: str) -> ApplicationError:
    return ApplicationError(message, code="invalid", details={field_name: [message]})


def _timing_validate(*, run_at: datetime | None, deadline: datetime | None, now: datetime) -> None:
    ahead = timedelta(seconds=settings.JOB_MAX_SCHEDULE_AHEAD_SECONDS)
    if run_at is not None and run_at > now + ahead:
        raise _invalid("run_at", f"run_at is more than {settings.JOB_MAX_SCHEDULE_AHEAD_SECONDS} seconds ahead.")
    if deadline is not None and deadline <= now:
        raise _invalid("deadline", "The deadline has already passed.")
    if deadline is not None and run_at is not None and deadline <= run_at:
        raise _invalid("deadline", "The deadline is not after run_at: the job could never run.")


def _retry_validate(*, job_type: JobType, retry: dict[str, int] | None) -> tuple[int, int]:
    """(max_attempts, backoff_seconds) of the job: its policy, within what its type allows."""
    if retry is None:
        return 1, 0
    limits = job_type.retry_limits
    if limits is None:
        raise _invalid("retry", f"{job_type.name} does not retry: send no retry policy.")
    attempts, backoff = retry["max_attempts"], retry["backoff_seconds"]
    if not 1 <= attempts <= limits.max_attempts or not 0 <= backoff <= limits.max_backoff_seconds:
        raise _invalid(
            "retry",
            f"{job_type.name} allows at most {limits.max_attempts} attempts and "
            f"{limits.max_backoff_seconds} seconds of backoff.",
        )
    return attempts, backoff


def job_prepare(
    *, owner: Client, request: SubmissionRequest, now: datetime, resolver: Resolver | None = None
) -> tuple[Job, JobType]:
    """The job `request` asks for, validated (400/413 otherwise) and not saved: dispatched at
    once unless it is scheduled (run_at), in which case the sweeper publishes it when due, as it
    does while a publish from this process failed moments ago (core.pause.broker).
    `resolver`: the batch's callback hosts, resolved together (webhooks.addresses)."""
    job_type = job_type_get(request.job_name)
    job_type_require_available(job_type=job_type)
    payload = payload_validate(job_type=job_type, payload=request.payload)
    if request.callback_url:
        callback_url_validate(url=request.callback_url, resolver=resolver, key=owner.pk)
    _timing_validate(run_at=request.run_at, deadline=request.deadline, now=now)
    max_attempts, backoff = _retry_validate(job_type=job_type, retry=request.retry)
    events = sorted(set(request.webhook_events)) if request.webhook_events else list(DEFAULT_WEBHOOK_EVENTS)
    scheduled = request.run_at is not None and request.run_at > now
    job = Job(
        owner=owner,
        job_name=job_type.name,
        payload=payload,
        callback_url=request.callback_url,
        webhook_events=events,
        webhook_endpoints=request.webhook_endpoints,
        metadata=request.metadata,
        run_at=request.run_at if scheduled else None,
        deadline=request.deadline,
        max_attempts=max_attempts,
        retry_backoff_seconds=backoff,
        dispatched_at=None if scheduled or pause.broker.paused() else now,
        created_at=now,
        request_id=logs.context().get("request_id") or "",
    )
    return job, job_type


def _refusal(*, owner: Client, cap: int, quota: int, adding: int = 1) -> TooManyRequests:
    """Why the owner's jobs were refused: its unfinished jobs (over `cap`, the owner's own when
    the operator set one), its results' bytes, or its jobs' bytes."""
    counts = JobCounts.objects.filter(owner=owner).first()
    over_cap = cap and (counts.unfinished if counts else 0) + adding > cap
    job_quota = settings.JOB_PAYLOAD_QUOTA_BYTES_PER_CLIENT
    if counts is not None and job_quota and counts.job_bytes >= job_quota and not over_cap:
        now, retention = timezone.now(), settings.JOB_RETENTION_DAYS
        prunable_at = selectors.jobs_room_at(owner=owner)
        # None finished: a job finishing (or canceled) now is the first the prune can take.
        room_at = _room_at(prunable_at or now + timedelta(days=retention), now)
        when = (
            f"all your stored jobs are unfinished: they are pruned {retention} days after they finish (or are "
            f"canceled), so room comes by {room_at:%Y-%m-%d %H:%M} UTC at the earliest (Retry-After)"
        ) if prunable_at is None else (
            f"finished jobs are kept {retention} days, and your oldest submitted finished job goes by "
            f"{room_at:%Y-%m-%d %H:%M} UTC (Retry-After)"
        )
        return TooManyRequests(
            f"Your stored jobs' payloads and metadata hold {counts.job_bytes} bytes, at or over the quota of "
            f"{job_quota}; submissions are refused until retention frees room: {when}.",
            code="job_storage_quota_exceeded",
            details={"job_bytes": counts.job_bytes, "quota_bytes": job_quota},
            headers={"Retry-After": _seconds_until(room_at, now)},
        )
    if counts is not None and quota and counts.result_bytes >= quota and not over_cap:
        now = timezone.now()
        room_at = _room_at(selectors.results_room_at(owner=owner) or now, now)
        return TooManyRequests(
            f"Your persisted results hold {counts.result_bytes} bytes, at or over the quota of {quota}; "
            "jobs that persist their result are refused until retention frees room: results are kept "
            f"{settings.JOB_RESULT_RETENTION_DAYS} days, and your oldest goes by {room_at:%Y-%m-%d %H:%M} UTC "
            "(Retry-After). Job types that persist nothing are accepted meanwhile; for room sooner, ask the "
            "operator.",
            code="result_quota_exceeded",
            details={"result_bytes": counts.result_bytes, "quota_bytes": quota},
            headers={"Retry-After": _seconds_until(room_at, now)},
        )
    return TooManyRequests(
        f"You may have {cap} unfinished jobs; wait for some to finish.",
        code="too_many_unfinished_jobs",
        details={"max_unfinished_jobs": cap},
        headers={"Retry-After": "5"},
    )


def _room_at(prunable_at: datetime, now: datetime) -> datetime:
    """When a quota has room again: the prune's next run (every HOUSEKEEPING_INTERVAL_SECONDS)
    after what is held passes its retention at `prunable_at`. Retry-After says it, not a retry
    refused again: an hour's, the prune's interval, had a client at its quota refused every hour
    for up to the retention."""
    return max(prunable_at, now) + timedelta(seconds=settings.HOUSEKEEPING_INTERVAL_SECONDS)


def _seconds_until(at: datetime, now: datetime) -> str:
    return str(math.ceil((at - now).total_seconds()))


def _job_insert(*, owner: Client, job: Job, job_type: JobType) -> Job:
    """Insert one job, the caps checked by the INSERT itself (one round trip); publish it once
    the row is committed. The row is inserted already claimed for dispatch (dispatched_at set),
    so the sweeper never publishes it too; if publishing fails, the claim is released and the
    sweeper takes over. One INSERT in autocommit is committed when it returns; inside a caller's
    transaction (the Idempotency-Key path) on_commit waits for that commit. A type that calls a
    model is first checked against its owner's model budget of the day (429 once spent), and one
    that reaches its owner's endpoints against their backlogs (429 while one is full)."""
    if job_type.uses_model:
        model_budget.model_budget_require_for_submit(owner=owner)
    if job.webhook_endpoints:
        endpoint_backlog_require_room(owner_id=owner.pk, now=timezone.now())
    cap = client_limit(client=owner, limit="max_unfinished_jobs")
    quota = settings.JOB_RESULT_QUOTA_BYTES_PER_CLIENT if job_type.persist_result else 0
    job_quota = settings.JOB_PAYLOAD_QUOTA_BYTES_PER_CLIENT
    if not sql.job_insert_below_cap(job, cap=cap, result_quota=quota, job_quota=job_quota):
        raise _refusal(owner=owner, cap=cap, quota=quota)
    telemetry.jobs_submitted(jobs=[job])
    if job.dispatched_at is not None:
        transaction.on_commit(lambda: dispatch.job_publish_or_release(job=job))
    return job


def job_submit(
    *,
    owner: Client,
    request: SubmissionRequest,
    idempotency_key: str = "",
    request_body: Any = None,
    request_headers: idempotency.RequestHeaders | None = None,
    endpoint: idempotency.Endpoint = idempotency.Endpoint.JOB,
) -> tuple[Job, bool]:
    """Validate and create a job; returns (job, created). A replayed idempotent request
    returns the first request's job with created=False; `endpoint` is the one the request came
    to (the starter's has keys of its own), `request_headers` those that changed `request`
    (idempotency.request_headers)."""
    identity = idempotency.request_identity(endpoint=endpoint, body=request_body, headers=request_headers or {})
    try:
        job, job_type = job_prepare(owner=owner, request=request, now=timezone.now())
    except ApplicationError as exc:
        return idempotency.jobs_replayed_or_raise(exc, owner=owner, key=idempotency_key, request=identity)[0], False
    if not idempotency_key:
        return _job_insert(owner=owner, job=job, job_type=job_type), True
    jobs, created = idempotency.jobs_created_once(
        owner=owner, key=idempotency_key, request=identity,
        create=lambda: [_job_insert(owner=owner, job=job, job_type=job_type)],
    )
    return jobs[0], created


class InvalidBatch(ApplicationError):
    code = "invalid_batch"


def _batch_insert(*, owner: Client, prepared: list[tuple[Job, JobType]]) -> list[Job]:
    """Insert a batch in one transaction, the caps checked for all its jobs at once under the
    owner's count row lock; the jobs wait for dispatch, and one message on commit has a worker
    publish them (jobs.dispatch_owner), so the request publishes one message, not one a job.
    A batch with a job of a type that calls a model is refused whole once its owner's model
    budget of the day is spent, and one with a job that reaches its owner's endpoints while one
    of their backlogs is full."""
    if any(job_type.uses_model for _, job_type in prepared):
        model_budget.model_budget_require_for_submit(owner=owner)
    if any(job.webhook_endpoints for job, _ in prepared):
        endpoint_backlog_require_room(owner_id=owner.pk, now=timezone.now())
    jobs = [job for job, _ in prepared]
    cap = client_limit(client=owner, limit="max_unfinished_jobs")
    persists = any(job_type.persist_result for _, job_type in prepared)
    quota = settings.JOB_RESULT_QUOTA_BYTES_PER_CLIENT if persists else 0
    for job in jobs:
        if job.dispatched_at is not None:
            job.dispatched_at = None  # published by the owner's dispatch, below
    with transaction.atomic():
        counts = JobCounts.objects.select_for_update().get(owner=owner)
        job_quota = settings.JOB_PAYLOAD_QUOTA_BYTES_PER_CLIENT
        if (
            (cap and counts.unfinished + len(jobs) > cap) or (quota and counts.result_bytes >= quota)
            or (job_quota and counts.job_bytes >= job_quota)
        ):
            raise _refusal(owner=owner, cap=cap, quota=quota, adding=len(jobs))
        Job.objects.bulk_create(jobs)
        telemetry.jobs_submitted(jobs=jobs)
    transaction.on_commit(lambda: dispatch.owner_dispatch_request(owner_id=owner.pk))
    return jobs


def jobs_submit_batch(
    *,
    owner: Client,
    requests: Sequence[SubmissionRequest | ApplicationError],
    idempotency_key: str = "",
    request_body: Any = None,
    request_headers: idempotency.RequestHeaders | None = None,
) -> tuple[list[Job], bool]:
    """Validate every job of a batch as a single submission would be; all or nothing (400
    naming each bad item's index and error: an item may come already refused by the API's
    parsing). Returns (jobs in order, created)."""
    identity = idempotency.request_identity(
        endpoint=idempotency.Endpoint.BATCH, body=request_body, headers=request_headers or {}
    )
    now = timezone.now()
    # Each callback host once, all within one time budget, before any job is checked.
    try:
        resolver = callback_hosts_resolve(
            (request.callback_url for request in requests
             if isinstance(request, SubmissionRequest) and request.callback_url),
            key=owner.pk,
        )
    except ApplicationError as exc:  # too many of the client's lookups waiting (429)
        return idempotency.jobs_replayed_or_raise(exc, owner=owner, key=idempotency_key, request=identity), False
    prepared: list[tuple[Job, JobType]] = []
    errors: list[dict[str, Any]] = []
    for index, request in enumerate(requests):
        try:
            if isinstance(request, ApplicationError):
                raise request
            prepared.append(job_prepare(owner=owner, request=request, now=now, resolver=resolver))
        except ApplicationError as exc:
            errors.append({"index": index, "code": exc.code, "message": exc.message, "details": exc.details})
    if errors:
        invalid = InvalidBatch(f"{len(errors)} of the {len(requests)} jobs are invalid; none was created.",
                               details={"jobs": errors})
        return idempotency.jobs_replayed_or_raise(invalid, owner=owner, key=idempotency_key, request=identity), False
    if not idempotency_key:
        return _batch_insert(owner=owner, prepared=prepared), True
    return idempotency.jobs_created_once(
        owner=owner, key=idempotency_key, request=identity,
        create=lambda: _batch_insert(owner=owner, prepared=prepared),
    )
