"""Accepting a job: validation, the unfinished-job cap, idempotency keys, and the insert that
hands the job to dispatch once it is committed."""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any

import pydantic
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.db import delete_in_batches
from core.errors import ApplicationError, Conflict, TooManyRequests, Unprocessable
from core.models import Client
from jobs import dispatch, sql
from jobs.models import DEFAULT_WEBHOOK_EVENTS, IdempotencyKey, Job, JobCounts
from jobs.registry import job_type_get
from jobs.types.base import JobType
from webhooks.addresses import callback_url_validate


def payload_validate(*, job_type: JobType, payload: Any) -> dict[str, Any]:
    """Validate `payload` against the type's schema; 400 with field errors otherwise, 413 when
    it is larger than the type accepts."""
    if not isinstance(payload, dict):
        raise ApplicationError(
            "payload must be a JSON object.",
            code="invalid_payload",
            details={"payload": ["Expected a JSON object."]},
        )
    size = len(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))
    if size > job_type.max_payload_bytes:
        raise ApplicationError(
            f"The payload is {size} bytes; {job_type.name} accepts at most {job_type.max_payload_bytes}.",
            code="payload_too_large",
            status_code=413,
            details={"payload_bytes": size, "max_payload_bytes": job_type.max_payload_bytes},
        )
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
    return payload


def job_type_require_available(*, job_type: JobType) -> None:
    reason = job_type.unavailable_reason()
    if reason:
        raise ApplicationError(
            f"{job_type.name} is unavailable: {reason}",
            code="job_type_unavailable",
            status_code=400,
            details={"job_name": job_type.name, "reason": reason},
        )


def _refusal(*, owner: Client, cap: int, quota: int) -> TooManyRequests:
    """Why the insert refused the owner's job: its unfinished jobs, or its results' bytes."""
    counts = JobCounts.objects.filter(owner=owner).first()
    if counts is not None and quota and counts.result_bytes >= quota and not (cap and counts.unfinished >= cap):
        return TooManyRequests(
            f"Your persisted results hold {counts.result_bytes} bytes, at or over the quota of {quota}; "
            "jobs that persist their result are refused until retention frees room.",
            code="result_quota_exceeded",
            details={"result_bytes": counts.result_bytes, "quota_bytes": quota},
            headers={"Retry-After": str(int(settings.HOUSEKEEPING_INTERVAL_SECONDS))},
        )
    return TooManyRequests(
        f"You have {cap} unfinished jobs; wait for some to finish.",
        code="too_many_unfinished_jobs",
        headers={"Retry-After": "5"},
    )


def job_create(
    *,
    owner: Client,
    job_type: JobType,
    payload: dict[str, Any],
    callback_url: str = "",
    webhook_events: list[str] | None = None,
) -> Job:
    """Insert the job and publish it once the row is committed; 429 instead when its owner has
    JOB_MAX_UNFINISHED_PER_CLIENT jobs not final yet, or, for a type that persists its result,
    when its persisted results hold JOB_RESULT_QUOTA_BYTES_PER_CLIENT bytes.

    The row is inserted already claimed for dispatch (dispatched_at set), so the sweeper never
    publishes it too; if publishing fails, the claim is released and the sweeper takes over.
    """
    job = Job(
        owner=owner,
        job_name=job_type.name,
        payload=payload,
        callback_url=callback_url,
        webhook_events=webhook_events or [],
        dispatched_at=timezone.now(),
    )
    # One INSERT in autocommit is committed when it returns; inside a caller's transaction (the
    # Idempotency-Key path) on_commit waits for that commit. Either way the row is durable
    # before its message exists.
    cap = settings.JOB_MAX_UNFINISHED_PER_CLIENT
    quota = settings.JOB_RESULT_QUOTA_BYTES_PER_CLIENT if job_type.persist_result else 0
    if not sql.job_insert_below_cap(job, cap=cap, result_quota=quota):
        raise _refusal(owner=owner, cap=cap, quota=quota)
    transaction.on_commit(lambda: dispatch.job_publish_or_release(job=job))
    return job


def request_fingerprint(body: Any) -> str:
    """Requests are compared as parsed JSON: key order and white space do not matter."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _in_progress() -> Conflict:
    return Conflict(
        "A request with this Idempotency-Key is still being processed; retry shortly.",
        code="idempotency_key_in_progress",
    )


def _idempotency_claim(*, owner: Client, key: str, fingerprint: str) -> Job | None:
    """Claim `key` for this request (None), or return the job an identical request made."""
    for _ in range(2):
        try:
            with transaction.atomic():
                IdempotencyKey.objects.create(owner=owner, key=key, fingerprint=fingerprint)
            return None
        except IntegrityError:
            existing = IdempotencyKey.objects.select_related("job").filter(owner=owner, key=key).first()
        if existing is None:
            continue  # deleted in between (expired, or the first request failed): claim again
        ttl = timedelta(seconds=settings.IDEMPOTENCY_KEY_TTL_SECONDS)
        if existing.created_at < timezone.now() - ttl:
            IdempotencyKey.objects.filter(pk=existing.pk).delete()
            continue
        if existing.fingerprint != fingerprint:
            raise Unprocessable(
                "This Idempotency-Key was used with a different request body.",
                code="idempotency_key_reused",
            )
        if existing.job is None:
            raise _in_progress()
        return existing.job
    raise _in_progress()


def job_submit(
    *,
    owner: Client,
    job_name: str,
    payload: Any,
    callback_url: str = "",
    webhook_events: list[str] | None = None,
    idempotency_key: str = "",
    request_body: Any = None,
) -> tuple[Job, bool]:
    """Validate and create a job; returns (job, created). A replayed idempotent request
    returns the first request's job with created=False. `webhook_events` defaults to the
    final events (what a callback gets when it names none)."""
    job_type = job_type_get(job_name)
    job_type_require_available(job_type=job_type)
    payload = payload_validate(job_type=job_type, payload=payload)
    if callback_url:
        callback_url_validate(url=callback_url)
    events = sorted(set(webhook_events)) if webhook_events else list(DEFAULT_WEBHOOK_EVENTS)

    def create() -> Job:
        return job_create(
            owner=owner, job_type=job_type, payload=payload, callback_url=callback_url,
            webhook_events=events,
        )

    if not idempotency_key:
        return create(), True
    fingerprint = request_fingerprint(request_body)
    replayed = _idempotency_claim(owner=owner, key=idempotency_key, fingerprint=fingerprint)
    if replayed is not None:
        return replayed, False
    try:
        with transaction.atomic():
            job = create()
            IdempotencyKey.objects.filter(owner=owner, key=idempotency_key).update(job=job)
    except BaseException:
        # Release the claim so the client can retry the same request.
        IdempotencyKey.objects.filter(owner=owner, key=idempotency_key, job__isnull=True).delete()
        raise
    return job, True


def idempotency_keys_prune(*, older_than: datetime, batch_size: int = 1000, max_batches: int = 100) -> int:
    """Delete Idempotency-Keys past their TTL (a replay after it makes a new job anyway)."""
    expired = IdempotencyKey.objects.filter(created_at__lt=older_than)
    return delete_in_batches(expired, batch_size=batch_size, max_batches=max_batches)
