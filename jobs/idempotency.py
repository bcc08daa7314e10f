"""Idempotency keys: a retried submission (one job or a batch) answers what the first made."""
from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.db import delete_in_batches
from core.errors import Conflict, Unprocessable
from core.models import Client
from jobs.models import IdempotencyKey, Job


def request_fingerprint(body: Any) -> str:
    """Requests are compared as parsed JSON: key order and white space do not matter."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _in_progress() -> Conflict:
    return Conflict(
        "A request with this Idempotency-Key is still being processed; retry shortly.",
        code="idempotency_key_in_progress",
    )


def _claim(*, owner: Client, key: str, fingerprint: str) -> IdempotencyKey | None:
    """Claim `key` for this request (None), or return the key an identical request made."""
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
        return existing
    raise _in_progress()


def jobs_created_once(
    *, owner: Client, key: str, request_body: Any, create: Callable[[], list[Job]]
) -> tuple[list[Job], bool]:
    """`create()` the jobs of a request, once per Idempotency-Key `key`: a replay of the same
    request answers the jobs the first made (created=False), in their order."""
    claimed = _claim(owner=owner, key=key, fingerprint=request_fingerprint(request_body))
    if claimed is not None:
        if claimed.batch is None:
            return [claimed.job], False  # type: ignore[list-item]
        ids = [uuid.UUID(job_id) for job_id in claimed.batch]
        by_id = Job.objects.in_bulk(ids)
        return [by_id[job_id] for job_id in ids if job_id in by_id], False
    try:
        with transaction.atomic():
            jobs = create()
            IdempotencyKey.objects.filter(owner=owner, key=key).update(
                job=jobs[0], batch=[str(job.id) for job in jobs] if len(jobs) > 1 else None
            )
    except BaseException:
        # Release the claim so the client can retry the same request.
        IdempotencyKey.objects.filter(owner=owner, key=key, job__isnull=True).delete()
        raise
    return jobs, True


def idempotency_keys_prune(*, older_than: datetime, batch_size: int = 1000, max_batches: int = 100) -> int:
    """Delete Idempotency-Keys past their TTL (a replay after it makes a new job anyway)."""
    expired = IdempotencyKey.objects.filter(created_at__lt=older_than)
    return delete_in_batches(expired, batch_size=batch_size, max_batches=max_batches)
