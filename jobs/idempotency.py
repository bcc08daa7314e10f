"""Idempotency keys: a retried submission (one job or a batch) answers what the first made, when
it is the same request: to the endpoint the key was first sent to, with the same body and the
same headers that change what it makes."""
from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.db import delete_in_batches
from core.errors import ApplicationError, Conflict, Unprocessable
from core.models import Client
from jobs import sql
from jobs.models import IdempotencyKey, Job

Endpoint = IdempotencyKey.Endpoint
# The headers a request is compared by, with its body: those that change what it makes.
# `Cancel-After` sets its jobs' deadline. Not `Prefer: wait`: it changes only how long the answer
# waits for the job, so a retry that waits less (or gave up waiting) is the same request. Nor those
# that choose the key (`Authorization`, `Idempotency-Key`) or only label the request (`X-Request-ID`).
RequestHeaders = dict[str, float]


@dataclass(frozen=True)
class RequestIdentity:
    """What a keyed submission is compared by: its endpoint, its body's fingerprint, its headers."""

    endpoint: Endpoint
    fingerprint: str
    headers: RequestHeaders


def request_identity(*, endpoint: Endpoint, body: Any, headers: RequestHeaders) -> RequestIdentity:
    return RequestIdentity(endpoint=endpoint, fingerprint=request_fingerprint(body), headers=headers)


def request_fingerprint(body: Any) -> str:
    """Requests are compared as parsed JSON: key order and white space do not matter."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def request_headers(*, cancel_after: timedelta | None) -> RequestHeaders:
    """The headers a submission is compared by, as parsed: `Cancel-After: 5` and `5s` ask for
    the same deadline, so they are the same request."""
    return {} if cancel_after is None else {"Cancel-After": cancel_after.total_seconds()}


def _headers_said(headers: RequestHeaders) -> str:
    return ", ".join(f"{name}: {seconds:g}s" for name, seconds in sorted(headers.items())) or "none"


def _in_progress() -> Conflict:
    return Conflict(
        "A request with this Idempotency-Key is still being processed; retry shortly.",
        code="idempotency_key_in_progress",
    )


def _mismatch(existing: IdempotencyKey, request: RequestIdentity) -> Unprocessable | None:
    """Why `existing` may not answer `request`, or None when it may. Each endpoint reads only
    its own fields of a body (`POST /api/jobs/` ignores `jobs`, the batch ignores `job_name`),
    so the same body sent to another is another request. A key saved before keys were bound to
    their endpoint (none named), or before headers were compared (no headers), is not compared
    by what it did not keep, as it was not then, so that a retry of a request sent before the
    upgrade still answers within the TTL."""
    if existing.endpoint is not None and existing.endpoint != request.endpoint:
        used = Endpoint(existing.endpoint).label
        return Unprocessable(
            f"This Idempotency-Key was used with a different request, to {used}; "
            "a key answers only on the endpoint it was first sent to.",
            code="idempotency_key_reused",
        )
    if existing.fingerprint != request.fingerprint:
        return Unprocessable(
            "This Idempotency-Key was used with a different request body.",
            code="idempotency_key_reused",
        )
    if existing.headers is not None and existing.headers != request.headers:
        return Unprocessable(
            f"This Idempotency-Key was used with a request whose headers differ (then "
            f"{_headers_said(existing.headers)}, now {_headers_said(request.headers)}); "
            "a key answers only the request it was first sent with.",
            code="idempotency_key_reused",
        )
    return None


def _replayed(existing: IdempotencyKey | None, *, request: RequestIdentity) -> IdempotencyKey | None:
    """`existing`, the key an identical earlier request made, or None when the key is free: none,
    or one past its TTL or without its job (jobs_created_once frees it). The key and its jobs
    commit together, so a key without its job is what an earlier version of this module left
    when its request died between the two (it committed the key first), and nothing will ever
    finish it."""
    if existing is None or not _alive(existing):
        return None
    mismatch = _mismatch(existing, request)
    if mismatch is not None:
        raise mismatch
    return existing


def jobs_replayed_or_raise(
    refusal: ApplicationError, *, owner: Client, key: str, request: RequestIdentity
) -> list[Job]:
    """The jobs an identical earlier request with `key` made, if there is one (a read, no lock);
    else raise `refusal`: what the checks made before the key is looked at say to the request
    today, changed since the first one (its deadline has passed, its job type is unavailable, its
    callback host does not resolve right now, or too many of its client's are being looked up).
    A repeat answers what the first made, whatever the service would say to the request today."""
    existing = _key_get(owner=owner, key=key) if key else None
    if existing is None or not _alive(existing) or _mismatch(existing, request) is not None:
        raise refusal
    return _jobs_of(existing)


def _key_get(*, owner: Client, key: str) -> IdempotencyKey | None:
    return IdempotencyKey.objects.select_related("job").filter(owner=owner, key=key).first()


def _alive(existing: IdempotencyKey) -> bool:
    """Within its TTL and with its job: a key without one is what an earlier version of this
    module left when its request died between committing the key and the job."""
    ttl = timedelta(seconds=settings.IDEMPOTENCY_KEY_TTL_SECONDS)
    return existing.job is not None and existing.created_at >= timezone.now() - ttl


def _jobs_of(key: IdempotencyKey) -> list[Job]:
    if key.batch is None:
        return [key.job]  # type: ignore[list-item]
    ids = [uuid.UUID(job_id) for job_id in key.batch]
    by_id = Job.objects.in_bulk(ids)
    return [by_id[job_id] for job_id in ids if job_id in by_id]


def jobs_created_once(
    *, owner: Client, key: str, request: RequestIdentity, create: Callable[[], list[Job]]
) -> tuple[list[Job], bool]:
    """`create()` the jobs of `request`, once per Idempotency-Key `key`: a replay of the same
    request answers the jobs the first made (created=False), in their order; the same key with
    another endpoint, body or headers is 422.

    The key is saved in the jobs' transaction, so a request that dies anywhere (its connection
    lost, its process killed) leaves neither, and the client's retry makes them. While that
    transaction runs, it holds the key's lock: a concurrent repeat answers 409 at once rather
    than wait for the first to commit (waiting, it would hold one of its process's few request
    turns, core/concurrency.py)."""
    with transaction.atomic():
        if not sql.idempotency_key_lock_try(owner.pk, key):
            raise _in_progress()
        existing = _key_get(owner=owner, key=key)
        replayed = _replayed(existing, request=request)
        if replayed is not None:
            return _jobs_of(replayed), False
        jobs = create()
        if existing is not None:
            # Freed once the jobs are made, their owner's count row locked: a deletion of the
            # key's job (the prune, jobs_delete) locks that row before the key (its cascade).
            # Freed first, the key was held while its count row was waited for: a deadlock.
            existing.delete()
        IdempotencyKey.objects.create(
            owner=owner, key=key, endpoint=request.endpoint, fingerprint=request.fingerprint,
            headers=request.headers,
            job=jobs[0], batch=[str(job.id) for job in jobs] if len(jobs) > 1 else None,
        )
    return jobs, True


def idempotency_keys_prune(*, older_than: datetime, batch_size: int = 1000, max_batches: int = 100) -> int:
    """Delete Idempotency-Keys past their TTL (a replay after it makes a new job anyway).

    Oldest first, so that each batch walks `idempotency_created` up to `older_than`: unordered,
    PostgreSQL 15 reads the table from its start whenever it expects most keys to be due, and
    all of it in the batch that finds fewer (docs/reliability.md, "Pruning at two million
    events")."""
    expired = IdempotencyKey.objects.filter(created_at__lt=older_than).order_by("created_at")
    return delete_in_batches(expired, batch_size=batch_size, max_batches=max_batches)
