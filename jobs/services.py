"""Every write to jobs: submission (with idempotency), dispatch, state transitions, cancel.

State transitions (see README): PENDING -> STARTED; STARTED <-> RETRY; PENDING/STARTED/RETRY ->
SUCCESS, FAILURE or REVOKED. A final state never changes, and the first one written wins: every
transition locks the row and re-reads its status, so a late or duplicate message is a no-op.
"""
from __future__ import annotations

import hashlib
import json
import logging
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import pydantic
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.db import delete_in_batches, insert_if, update_one_returning
from core.errors import ApplicationError, Conflict, NotFound, TooManyRequests, Unprocessable
from core.models import Client
from jobs import tasks
from jobs.models import DEFAULT_WEBHOOK_EVENTS, FINAL_WEBHOOK_EVENTS, IdempotencyKey, Job, JobResult
from jobs.registry import JobType, job_type_get
from jobs.selectors import job_unfinished_below

if TYPE_CHECKING:
    from webhooks.models import Delivery

logger = logging.getLogger(__name__)

Status = Job.Status


# --- Submission ------------------------------------------------------------------------------


def payload_validate(*, job_type: JobType, payload: Any) -> dict[str, Any]:
    """Validate `payload` against the type's schema; 400 with field errors otherwise."""
    if not isinstance(payload, dict):
        raise ApplicationError(
            "payload must be a JSON object.",
            code="invalid_payload",
            details={"payload": ["Expected a JSON object."]},
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


def job_create(
    *,
    owner: Client,
    job_type: JobType,
    payload: dict[str, Any],
    callback_url: str = "",
    webhook_events: list[str] | None = None,
) -> Job:
    """Insert the job and publish it once the row is committed; 429 instead when its owner has
    JOB_MAX_UNFINISHED_PER_CLIENT jobs not final yet.

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
    # The cap is checked by the INSERT itself (one round trip, not a COUNT and then a save).
    # No atomic block of its own: one INSERT in autocommit mode is committed when it returns,
    # and an atomic block would only add BEGIN and COMMIT round trips (docs/benchmarks.md).
    # on_commit then publishes at once, or, inside a caller's transaction (the Idempotency-Key
    # path), after that commits: either way the row is durable before the message exists.
    cap = settings.JOB_MAX_UNFINISHED_PER_CLIENT
    condition, params = job_unfinished_below(owner=owner, cap=cap) if cap else ("1 = 1", [])
    if not insert_if(job, condition=condition, params=params):
        raise TooManyRequests(
            f"You have {cap} unfinished jobs; wait for some to finish.",
            code="too_many_unfinished_jobs",
            headers={"Retry-After": "5"},
        )
    transaction.on_commit(lambda: job_publish_or_release(job=job))
    return job


def request_fingerprint(body: Any) -> str:
    """Requests are compared as parsed JSON: key order and white space do not matter."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


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
            raise Conflict(
                "A request with this Idempotency-Key is still being processed; retry shortly.",
                code="idempotency_key_in_progress",
            )
        return existing.job
    raise Conflict(
        "A request with this Idempotency-Key is still being processed; retry shortly.",
        code="idempotency_key_in_progress",
    )


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
    returns the first request's job with created=False."""
    job_type = job_type_get(job_name)
    job_type_require_available(job_type=job_type)
    payload = payload_validate(job_type=job_type, payload=payload)
    if callback_url:
        from webhooks.services import callback_url_validate

        callback_url_validate(url=callback_url)
    if not idempotency_key:
        return job_create(
            owner=owner,
            job_type=job_type,
            payload=payload,
            callback_url=callback_url,
            webhook_events=webhook_events,
        ), True

    fingerprint = request_fingerprint(request_body)
    replayed = _idempotency_claim(owner=owner, key=idempotency_key, fingerprint=fingerprint)
    if replayed is not None:
        return replayed, False
    try:
        with transaction.atomic():
            job = job_create(
                owner=owner,
                job_type=job_type,
                payload=payload,
                callback_url=callback_url,
                webhook_events=webhook_events,
            )
            IdempotencyKey.objects.filter(owner=owner, key=idempotency_key).update(job=job)
    except BaseException:
        # Release the claim so the client can retry the same request.
        IdempotencyKey.objects.filter(owner=owner, key=idempotency_key, job__isnull=True).delete()
        raise
    return job, True


# --- Dispatch --------------------------------------------------------------------------------


def job_publish_or_release(*, job: Job) -> bool:
    """Publish a claimed job; on any broker failure release the claim for the sweeper."""
    try:
        tasks.job_publish(job=job)
    except Exception:  # the broker's client raises many types; every one means "not published"
        logger.warning("Could not publish job %s; the sweeper will retry", job.id, exc_info=True)
        Job.objects.filter(pk=job.pk, status=Status.PENDING).update(dispatched_at=None)
        return False
    return True


def jobs_dispatch_undispatched(*, limit: int = 500) -> int:
    """The sweeper: claim jobs nobody published (broker was down) and publish them.

    SKIP LOCKED lets several beat/worker processes sweep at once without publishing a job twice.
    """
    with transaction.atomic():
        claimed = list(
            Job.objects.select_for_update(skip_locked=True)
            .filter(dispatched_at__isnull=True, status=Status.PENDING)
            .order_by("created_at")[:limit]
        )
        if not claimed:
            return 0
        Job.objects.filter(pk__in=[job.pk for job in claimed]).update(dispatched_at=timezone.now())
    published = 0
    for job in claimed:
        if not job_publish_or_release(job=job):
            # The broker is still down: release the rest too and try on the next sweep.
            rest = [j.pk for j in claimed[claimed.index(job) + 1 :]]
            Job.objects.filter(pk__in=rest, status=Status.PENDING).update(dispatched_at=None)
            break
        published += 1
    return published


# --- Transitions -----------------------------------------------------------------------------


def _locked(job_id: uuid.UUID) -> Job | None:
    return Job.objects.select_for_update().filter(pk=job_id).first()


# At most one job.progress webhook per job per this many seconds; the final event carries the
# last progress anyway.
PROGRESS_EVENT_MIN_INTERVAL_SECONDS = 1.0


def _events_record(*, job: Job, event_type: str, by_chain: bool = False) -> None:
    """Hand the webhook event for this transition to webhooks, in the caller's transaction
    (the job row is locked), so the event exists exactly when the state change does.

    `by_chain`: the transition is made by a step of the job's Celery chain, whose tail
    (webhooks.deliveries_send_for_subject) sends the event, so it is not published on commit.
    """
    if not job.callback_url or event_type not in (job.webhook_events or DEFAULT_WEBHOOK_EVENTS):
        return
    from jobs.serializers import job_representation
    from webhooks import selectors as webhook_selectors
    from webhooks import services as webhook_services

    if event_type == "job.progress":
        last = webhook_selectors.event_latest_at(subject_id=job.id, event_type=event_type)
        if last and timezone.now() - last < timedelta(seconds=PROGRESS_EVENT_MIN_INTERVAL_SECONDS):
            return
    webhook_services.event_record(
        owner_id=job.owner_id,
        subject_id=job.id,
        event_type=event_type,
        data=job_representation(job),
        callback_url=job.callback_url,
        publish=not by_chain,
    )


# The conditions of the two transitions every job makes, as SQL on its columns (written once;
# see core.db.update_one_returning): still queued and not cancelled (and, for the start in
# autocommit, no job.started webhook wanted: the events are a JSON list of fixed lower-case
# names); and not final yet.
_STARTABLE = "status = %s AND NOT cancel_requested"
_STARTABLE_WITHOUT_EVENT = f"{_STARTABLE} AND CAST(webhook_events AS TEXT) NOT LIKE %s"
_FINAL_STATUSES = sorted(Job.FINAL_STATUSES)
_NOT_FINAL = f"status NOT IN ({', '.join(['%s'] * len(_FINAL_STATUSES))})"


def job_start(*, job_id: uuid.UUID) -> Job | None:
    """Mark the job STARTED; None when it must not run (final already, or gone)."""
    # The usual case, a queued job nobody cancelled that wants no job.started webhook, is one
    # statement in autocommit: no event to record with it, so no BEGIN and COMMIT round trips.
    started = update_one_returning(
        Job, pk=job_id, condition=_STARTABLE_WITHOUT_EVENT, params=[Status.PENDING, '%"job.started"%'],
        status=Status.STARTED, started_at=timezone.now(),
    )
    if started is not None:
        return started
    with transaction.atomic():
        started = update_one_returning(
            Job, pk=job_id, condition=_STARTABLE, params=[Status.PENDING],
            status=Status.STARTED, started_at=timezone.now(),
        )
        if started is not None:
            _events_record(job=started, event_type="job.started")
            return started
        job = _locked(job_id)
        if job is None or job.is_final:
            return None
        if job.cancel_requested:
            _finish(job, Status.REVOKED, by_chain=True)  # only a chain's first step starts jobs
            return None
    return job  # STARTED already: its message was delivered again (a lost worker); run it again


def job_progress(*, job_id: uuid.UUID, current: int, total: int, message: str = "") -> None:
    progress = {"current": current, "total": total, "message": message}
    with transaction.atomic():
        job = _locked(job_id)
        if job is None or job.status not in (Status.STARTED, Status.RETRY):
            return
        job.progress = progress
        job.save(update_fields=["progress"])
        _events_record(job=job, event_type="job.progress")


def job_set_retrying(*, job_id: uuid.UUID, retrying: bool) -> None:
    source, target = (Status.STARTED, Status.RETRY) if retrying else (Status.RETRY, Status.STARTED)
    Job.objects.filter(pk=job_id, status=source).update(status=target)


def job_cancel_requested(*, job_id: uuid.UUID) -> bool:
    """True when the job was cancelled, or its row is gone (pruned): either way, stop."""
    return not Job.objects.filter(pk=job_id, cancel_requested=False).exists()


def _finish(job: Job, status: str, *, by_chain: bool = False) -> None:
    """Write a final state on a locked, not-yet-final row, with its event and persisted result."""
    job.status = status
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "finished_at"])
    _finished(job, by_chain=by_chain)


def _finished(job: Job, *, by_chain: bool) -> None:
    """What follows a final state written in the caller's transaction: the persisted result,
    and the webhook event."""
    if job.status == Status.SUCCESS:
        job_type = job_type_get(job.job_name)
        if job_type.persist_result:
            JobResult.objects.create(
                owner_id=job.owner_id, job=job, task_name=job.job_name, result=job.result
            )
    event = {Status.SUCCESS: "job.succeeded", Status.FAILURE: "job.failed"}.get(job.status, "job.canceled")
    _events_record(job=job, event_type=event, by_chain=by_chain)


def job_finish(
    *,
    job_id: uuid.UUID,
    status: str,
    result: Any = None,
    error: dict[str, str] | None = None,
    by_chain: bool = False,
) -> bool:
    """Write a final state unless the job already has one (the first final state wins).

    `by_chain`: called by a step of the job's chain (see `_events_record`)."""
    fields: dict[str, Any] = {}
    if status == Status.SUCCESS:
        fields["result"] = result
    if error is not None:
        fields["error"] = error
    with transaction.atomic():
        # One statement writes the final state unless there is one; it locks the row until commit.
        finished = update_one_returning(
            Job, pk=job_id, condition=_NOT_FINAL, params=_FINAL_STATUSES,
            status=status, finished_at=timezone.now(), **fields,
        )
        if finished is None:
            return False
        _finished(finished, by_chain=by_chain)
    return True


def job_redeliver(*, owner: Client, job_id: uuid.UUID | str) -> Delivery:
    """Send the job's final event to its callback again (same bytes, same webhook-id)."""
    from jobs.selectors import job_get
    from webhooks import services as webhook_services

    job = job_get(owner=owner, job_id=job_id)
    return webhook_services.delivery_redeliver(
        owner_id=owner.pk, subject_id=job.id, event_types=FINAL_WEBHOOK_EVENTS
    )


def job_cancel(*, owner: Client, job_id: uuid.UUID) -> Job:
    """Cancel: at once if the job is still queued, cooperatively (within a step) if running."""
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id, owner=owner).first()
        if job is None:
            raise NotFound("No such job.")
        if job.is_final:
            raise Conflict(f"The job is already {job.status}.", code="job_already_final")
        job.cancel_requested = True
        job.save(update_fields=["cancel_requested"])
        if job.status == Status.PENDING:
            _finish(job, Status.REVOKED)
            transaction.on_commit(lambda: tasks.job_revoke_queued(job_id=job.id))
    return job


def jobs_fail_abandoned() -> int:
    """Fail jobs left STARTED/RETRY by a worker that vanished for good.

    A worker lost mid-job has its message redelivered by the broker after the visibility
    timeout; a job still unfinished after that plus all its steps' hard time limits can no
    longer be running anywhere, so it fails with error.type "worker_lost".
    """
    from jobs.registry import job_types_all

    now = timezone.now()
    failed = 0
    for job_type in job_types_all():
        limit_seconds = (
            settings.CELERY_BROKER_VISIBILITY_TIMEOUT_SECONDS
            + len(job_type.steps) * job_type.time_limit_seconds
            + 60
        )
        stale = Job.objects.filter(
            job_name=job_type.name,
            status__in=(Status.STARTED, Status.RETRY),
            started_at__lt=now - timedelta(seconds=limit_seconds),
        ).values_list("pk", flat=True)
        for job_id in list(stale[:500]):
            failed += job_finish(
                job_id=job_id,
                status=Status.FAILURE,
                error={"type": "worker_lost", "message": "The worker running this job was lost."},
            )
    return failed


# --- Housekeeping (pruning) ------------------------------------------------------------------
# Finished jobs, delivery logs and persisted results are deleted after their retention (results
# last longest: a JobResult outlives its job, its `job` set to NULL). Run by the periodic task
# `jobs.prune`. Batched, so one run never locks a big slice of a table; a run that stops at
# `max_batches` leaves the rest to the next.

PRUNE_BATCH_SIZE = 1000


def jobs_prune(*, older_than: datetime, batch_size: int = PRUNE_BATCH_SIZE, max_batches: int = 100) -> int:
    """Delete jobs that finished before `older_than` (and their idempotency keys)."""
    finished = Job.objects.filter(status__in=Job.FINAL_STATUSES, finished_at__lt=older_than)
    return delete_in_batches(finished, batch_size=batch_size, max_batches=max_batches)


def job_results_prune(
    *, older_than: datetime, batch_size: int = PRUNE_BATCH_SIZE, max_batches: int = 100
) -> int:
    """Delete persisted results created before `older_than`."""
    old = JobResult.objects.filter(created_at__lt=older_than)
    return delete_in_batches(old, batch_size=batch_size, max_batches=max_batches)


def idempotency_keys_prune(
    *, older_than: datetime, batch_size: int = PRUNE_BATCH_SIZE, max_batches: int = 100
) -> int:
    """Delete Idempotency-Keys past their TTL (a replay after it makes a new job anyway)."""
    expired = IdempotencyKey.objects.filter(created_at__lt=older_than)
    return delete_in_batches(expired, batch_size=batch_size, max_batches=max_batches)


def housekeeping_run(*, now: datetime | None = None) -> dict[str, int]:
    """Prune everything past its retention (settings `*_RETENTION_DAYS`); counts per kind."""
    from webhooks.services import events_prune

    now = now or timezone.now()
    days = timedelta(days=1)
    return {
        "jobs": jobs_prune(older_than=now - settings.JOB_RETENTION_DAYS * days),
        "results": job_results_prune(older_than=now - settings.JOB_RESULT_RETENTION_DAYS * days),
        "webhook_events": events_prune(older_than=now - settings.WEBHOOK_EVENT_RETENTION_DAYS * days),
        "idempotency_keys": idempotency_keys_prune(
            older_than=now - timedelta(seconds=settings.IDEMPOTENCY_KEY_TTL_SECONDS)
        ),
    }
