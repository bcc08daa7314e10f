"""Reads of jobs and persisted results, always scoped to their owner."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import django_filters
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import (
    BooleanField,
    Case,
    Count,
    ExpressionWrapper,
    F,
    Func,
    IntegerField,
    JSONField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    When,
)
from django.db.models.fields.json import KeyTransform
from django.db.models.functions import Coalesce
from django.db.models.lookups import GreaterThan

from core.errors import NotFound
from core.filters import UtcIsoDateTimeFilter
from core.limits import Limit, client_limit
from core.models import Client
from jobs import sql
from jobs.model_budget import budget_day, next_budget_day_at
from jobs.models import Job, JobCounts, JobResult, ModelUsage
from jobs.wakeups import hub
from webhooks import selectors as webhook_selectors
from webhooks.backlog import endpoint_backlogs
from webhooks.models import Delivery, Endpoint

# What a missing job's and result's 404 say (the spec's examples of them).
NO_JOB = "No such job."
NO_RESULT = "No such result."


class JobFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=Job.Status.choices)
    job_name = django_filters.CharFilter()
    created_after = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Job
        fields = ["status", "job_name", "created_after", "created_before"]


class JobResultFilter(django_filters.FilterSet):
    task_name = django_filters.CharFilter()

    class Meta:
        model = JobResult
        fields = ["task_name"]


def job_get(*, owner: Client, job_id: uuid.UUID | str) -> Job:
    """The owner's job; another owner's id and a malformed id both answer 404."""
    try:
        # What UUIDField accepts: any form uuid.UUID parses.
        job_uuid = job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))
    except ValueError:
        raise NotFound(NO_JOB) from None
    job = sql.job_of_owner(job_uuid, owner.pk)
    if job is None:
        raise NotFound(NO_JOB)
    return job


def job_deliveries(*, owner: Client, job_id: uuid.UUID | str) -> QuerySet[Delivery]:
    """The job's webhook deliveries, with their events and attempts; a job pruned since (past
    JOB_RETENTION_DAYS) has those its events' retention keeps (WEBHOOK_EVENT_RETENTION_DAYS may
    be longer), as the owner's list of deliveries shows them: a 404 here while that list still
    had them told the client they were gone. NotFound for an id of no job of the owner's, nor
    of any delivery of its."""
    deliveries = webhook_selectors.delivery_list(owner_id=owner.pk, subject_id=job_id)
    if not Job.objects.filter(pk=job_id, owner=owner).exists() and not deliveries.exists():
        raise NotFound(NO_JOB)
    return deliveries


class JsonTextBytes(Func):
    """The size in bytes of a JSON column's text, computed where the value is stored."""

    template = "OCTET_LENGTH((%(expressions)s)::text)"
    output_field = IntegerField()

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        # Embedded mode: SQLite keeps JSON as text, and has no OCTET_LENGTH before 3.43.
        return self.as_sql(
            compiler, connection, template="LENGTH(CAST(%(expressions)s AS BLOB))", **extra
        )


class StoredBytes(Func):
    """The size in bytes of a column's value as stored (compressed, perhaps), read from its
    header: a large value is not fetched nor decompressed to answer it."""

    function = "PG_COLUMN_SIZE"
    output_field = IntegerField()

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(
            compiler, connection, template="LENGTH(CAST(%(expressions)s AS BLOB))", **extra
        )


# jsonb takes at most about 4 times the bytes of its text (measured: an array of one-digit
# numbers, the worst case; strings take less), so a value stored larger than this many times
# the limit is over it without turning it into text, which costs seconds for a page of
# large values (docs/api.md, "Bounded lists").
_STORED_TO_TEXT_MAX_RATIO = 8


def _inline_when_small(names: tuple[str, ...], max_bytes: int) -> dict[str, Any]:
    """Annotations that stand for each JSON column `name` (which the caller defers):
    `<name>_inline`, the value when its JSON text is at most `max_bytes` bytes, else NULL, and
    `<name>_stored`, whether there is a value at all: neither SQL NULL, what the code writes for
    none, nor JSON null, which a row written otherwise (by hand, by an older version) may hold,
    and which the item's URL shows as null too; counted as a value, it was listed null and named
    in `omitted`, as though too large. A large value never leaves PostgreSQL."""
    annotations: dict[str, Any] = {}
    for name in names:
        annotations[f"{name}_inline"] = Case(
            # A CASE evaluates its branches in order: the cheap test first.
            When(GreaterThan(StoredBytes(name), max_bytes * _STORED_TO_TEXT_MAX_RATIO), then=None),
            When(GreaterThan(JsonTextBytes(name), max_bytes), then=None),
            default=F(name),
            output_field=JSONField(),
        )
        annotations[f"{name}_stored"] = ExpressionWrapper(
            Q(**{f"{name}__isnull": False}) & ~Q(**{name: None}), output_field=BooleanField()
        )
    return annotations


def _of_owner(owner: Client) -> Subquery:
    """The owner's id as a list page compares it: read from the client's row by a subquery, a
    value PostgreSQL knows only when the query runs, so it plans the page for any one client
    and takes the owner-first indexes.

    Given the id written in, it planned by that client's share of the table, and for a client
    with most of the rows walked an index that is not owner-first for the order it gives,
    dropping every other client's rows on the way: `result_created` back through all the
    others' results newer than the client's last, `job_active` through every other client's
    unfinished jobs for `?status=PENDING` (docs/reliability.md, "One client's data, another's
    cost")."""
    return Subquery(Client.objects.filter(pk=owner.pk).values("pk"))


def job_list(*, owner: Client, inline_max_bytes: int) -> QuerySet[Job]:
    """The owner's jobs for a list page: `payload` and `result` are not selected; see
    `_inline_when_small` for what replaces them."""
    annotations = _inline_when_small(("payload", "result"), inline_max_bytes)
    return Job.objects.filter(owner=_of_owner(owner)).defer("payload", "result").annotate(**annotations)


class MetadataOfOwner(Func):
    """`jsonb_set('{}', ARRAY[owner_id::text], metadata)`: a job's metadata under its owner's id,
    the expression the GIN index `job_owner_metadata` holds (migration 0013). Its two arguments
    are the owner and the metadata columns."""

    arg_joiner = ")::text], "
    template = "jsonb_set('{}'::jsonb, ARRAY[(%(expressions)s)"
    output_field = JSONField()


def jobs_with_metadata(jobs: QuerySet[Job], metadata: dict[str, str], *, owner: Client) -> QuerySet[Job]:
    """The owner's jobs whose metadata holds every key with its value. On PostgreSQL as one
    containment under the owner's id, which reads only the owner's entries of the GIN index
    `job_owner_metadata`, however many other clients' jobs carry the same labels; elsewhere key
    by key."""
    if not metadata:
        return jobs
    if connection.vendor == "postgresql":
        return jobs.alias(metadata_of_owner=MetadataOfOwner("owner", "metadata")).filter(
            metadata_of_owner__contains={str(owner.pk): metadata}
        )
    # The key's JSON value against the value as JSON: as text, SQLite's JSON_EXTRACT read the
    # value given as JSON, a number for "42" (never equal to the string stored) and an error for
    # a word (a 500).
    for number, (key, value) in enumerate(metadata.items()):
        name = f"metadata_{number}"
        jobs = jobs.alias(**{name: KeyTransform(key, "metadata")}).filter(**{name: value})
    return jobs


def result_list(*, owner: Client, inline_max_bytes: int) -> QuerySet[JobResult]:
    """The owner's persisted results for a list page, `result` as in `job_list`."""
    annotations = _inline_when_small(("result",), inline_max_bytes)
    return JobResult.objects.filter(owner=_of_owner(owner)).defer("result").annotate(**annotations)


def result_get(*, owner: Client, result_id: int) -> JobResult:
    try:
        return JobResult.objects.get(pk=result_id, owner=owner)
    except (JobResult.DoesNotExist, ValidationError, ValueError, TypeError):
        raise NotFound(NO_RESULT) from None


@dataclass(frozen=True)
class ClientUsage:
    """What a client's limits are checked against, as it stands."""

    unfinished_jobs: int
    running_jobs: int
    result_bytes: int
    job_bytes: int
    model_tokens_today: int
    webhook_endpoints: int


def results_room_at(*, owner: Client) -> datetime | None:
    """When the owner's oldest persisted result passes JOB_RESULT_RETENTION_DAYS, so the prune
    deletes it (within HOUSEKEEPING_INTERVAL_SECONDS after): the earliest its results quota can
    have room again, as nothing the client does frees any (the API deletes no result; a job the
    operator deletes leaves its result). None without results. Read through the owner's
    newest-first index, from its end."""
    oldest = JobResult.objects.filter(owner=owner).order_by("created_at").values_list("created_at", flat=True).first()
    return None if oldest is None else oldest + timedelta(days=settings.JOB_RESULT_RETENTION_DAYS)


def jobs_room_at(*, owner: Client) -> datetime | None:
    """About when the prune first deletes one of the owner's finished jobs (its finish past
    JOB_RETENTION_DAYS, within HOUSEKEEPING_INTERVAL_SECONDS after): the finish of its oldest
    submitted finished job plus the retention; None when none has finished. The oldest submitted,
    read through its owner-first index from its end, not the first finished, which needs a scan
    of all its jobs: a refusal reads it, at the owner's rate. A job scheduled far ahead or retried
    long, submitted first and finished last, makes it late by as much (docs/api.md)."""
    finished = (
        Job.objects.filter(owner=owner, status__in=Job.FINAL_STATUSES, finished_at__isnull=False)
        .order_by("created_at").values_list("finished_at", flat=True).first()
    )
    return None if finished is None else finished + timedelta(days=settings.JOB_RETENTION_DAYS)


def client_usage(*, owner: Client, now: datetime) -> ClientUsage:
    """The owner's usage in one query: its JobCounts row (exact, kept by triggers), with its
    model usage of the day and its endpoints' count as subqueries on their owner-first indexes.
    The row is made with its client (migration 0010), so there is always one to read."""
    tokens = ModelUsage.objects.filter(owner_id=OuterRef("owner_id"), day=budget_day(now)).values("tokens")
    endpoints = (
        Endpoint.objects.filter(owner_id=OuterRef("owner_id")).order_by().values("owner_id")
        .annotate(count=Count("pk")).values("count")
    )
    unfinished, running, result_bytes, job_bytes, tokens_today, endpoint_count = JobCounts.objects.filter(
        owner_id=owner.pk
    ).values_list(
        "unfinished", "running", "result_bytes", "job_bytes",
        Coalesce(Subquery(tokens), 0), Coalesce(Subquery(endpoints), 0),
    ).get()
    return ClientUsage(
        unfinished_jobs=unfinished, running_jobs=running, result_bytes=result_bytes, job_bytes=job_bytes,
        model_tokens_today=tokens_today, webhook_endpoints=endpoint_count,
    )


def _no_limit_if_zero(limit: int) -> int | None:
    return limit or None


def _webhook_backlog(*, owner: Client, endpoints: int, now: datetime) -> dict[str, Any]:
    """The owner's paced endpoints' backlogs against WEBHOOK_MAX_BACKLOG_PER_ENDPOINT, as
    `GET /api/limits/` shows them: those with deliveries waiting, fullest first, counted as a
    refusal (429 `webhook_backlog_full`) counts them, and the fullest as `used`. An owner with no
    `endpoints` (nearly every one) costs no query; one with some, one read of at most
    WEBHOOK_MAX_ENDPOINTS_PER_CLIENT rows."""
    waiting = endpoint_backlogs(owner_id=owner.pk, now=now) if endpoints else []
    shown = sorted(
        (backlog for backlog in waiting if backlog.waiting_deliveries),
        key=lambda backlog: backlog.waiting_deliveries, reverse=True,
    )
    return {
        "limit": _no_limit_if_zero(settings.WEBHOOK_MAX_BACKLOG_PER_ENDPOINT),
        "used": shown[0].waiting_deliveries if shown else 0,
        "endpoints": [
            {"endpoint_id": backlog.endpoint_id, "waiting_deliveries": backlog.waiting_deliveries}
            for backlog in shown
        ],
    }


def client_limits(*, owner: Client, now: datetime) -> dict[str, dict[str, Any]]:
    """The owner's effective limits (its operator's overrides, or the settings; `None` where
    there is none) beside its usage of them, as `GET /api/limits/` answers them. The limits are
    read off the client its API key loaded: as current as the ones its requests are held to.
    Its waits and streams are this process's count (jobs.wakeups.Hub), the only one kept: each
    API process holds them to API_MAX_WAITERS_PER_CLIENT on its own."""
    usage = client_usage(owner=owner, now=now)

    def limit(name: Limit) -> int | None:
        return _no_limit_if_zero(client_limit(client=owner, limit=name))

    return {
        "submissions_per_minute": {"limit": limit("submit_rate_per_minute")},
        "reads_per_minute": {"limit": limit("read_rate_per_minute")},
        "writes_per_minute": {"limit": _no_limit_if_zero(settings.API_WRITE_RATE_PER_MINUTE)},
        "sensitive_writes_per_minute": {"limit": _no_limit_if_zero(settings.API_SENSITIVE_RATE_PER_MINUTE)},
        "unfinished_jobs": {"limit": limit("max_unfinished_jobs"), "used": usage.unfinished_jobs},
        "running_jobs": {
            "limit": _no_limit_if_zero(settings.JOB_MAX_RUNNING_PER_CLIENT), "used": usage.running_jobs
        },
        "result_bytes": {
            "limit": _no_limit_if_zero(settings.JOB_RESULT_QUOTA_BYTES_PER_CLIENT), "used": usage.result_bytes
        },
        "job_bytes": {
            "limit": _no_limit_if_zero(settings.JOB_PAYLOAD_QUOTA_BYTES_PER_CLIENT), "used": usage.job_bytes
        },
        "model_tokens_today": {
            "limit": limit("model_tokens_per_day"), "used": usage.model_tokens_today,
            "renews_at": next_budget_day_at(now),
        },
        # Its 0 allows none (webhooks.endpoints), unlike the others' 0: it is a limit of 0.
        "webhook_endpoints": {
            "limit": settings.WEBHOOK_MAX_ENDPOINTS_PER_CLIENT, "used": usage.webhook_endpoints
        },
        "webhook_backlog": _webhook_backlog(owner=owner, endpoints=usage.webhook_endpoints, now=now),
        # Its 0 allows none too (jobs.waiting: a count of 0 is already at it).
        "waits_and_streams_per_process": {
            "limit": settings.API_MAX_WAITERS_PER_CLIENT, "used": hub.waiting(owner.pk)[1]
        },
    }
