"""Reads of jobs and persisted results, always scoped to their owner."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import QuerySet

from core.db import select_one
from core.errors import NotFound
from core.models import Client
from jobs.models import Job, JobResult, UnfinishedJobCount


class UtcIsoDateTimeField(django_filters.fields.IsoDateTimeField):
    """ISO 8601 allows UTC offsets PostgreSQL refuses (beyond +-15:59, a 500 when queried):
    compare in UTC, and refuse times that fall outside the representable years."""

    def to_python(self, value: object) -> datetime | None:
        parsed = super().to_python(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(UTC)
        except OverflowError:
            raise forms.ValidationError("Date and time out of range.", code="invalid") from None


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField


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


# The poll's one query and the submit's cap condition, as SQL written once: having the ORM build
# them on every request (filters, joins, 15 quoted columns) cost more CPU than everything else
# in a poll's view (docs/benchmarks.md). The cap reads the owner's UnfinishedJobCount, one row
# by key, whatever the number of jobs.
_JOB_BY_ID = "t.id = %s AND t.owner_id = %s"
_UNFINISHED_BELOW_SQL = (
    f"COALESCE((SELECT unfinished FROM {UnfinishedJobCount._meta.db_table} WHERE owner_id = %s), 0)"
    " < %s"
)


def _owner_id(owner: Client) -> Any:
    """The owner's id as the column stores it (a uuid in PostgreSQL, hex text in SQLite)."""
    return Job._meta.get_field("owner").get_db_prep_value(owner.pk, connection)


def job_get(*, owner: Client, job_id: uuid.UUID | str) -> Job:
    """The owner's job; another owner's id and a malformed id both answer 404."""
    try:
        # What UUIDField accepts: any form uuid.UUID parses.
        job_uuid = job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))
    except ValueError:
        raise NotFound("No such job.") from None
    params = [Job._meta.get_field("id").get_db_prep_value(job_uuid, connection), _owner_id(owner)]
    job = select_one(Job, where=_JOB_BY_ID, params=params)
    if job is None:
        raise NotFound("No such job.")
    return job


def job_unfinished_below(*, owner: Client, cap: int) -> tuple[str, list[Any]]:
    """The SQL condition, with its parameters, that the owner has fewer than `cap` jobs not
    final yet (its UnfinishedJobCount); the submit checks it in its INSERT."""
    return _UNFINISHED_BELOW_SQL, [_owner_id(owner), cap]


def job_list(*, owner: Client) -> QuerySet[Job]:
    return Job.objects.filter(owner=owner)


def result_list(*, owner: Client) -> QuerySet[JobResult]:
    return JobResult.objects.filter(owner=owner)


def result_get(*, owner: Client, result_id: int) -> JobResult:
    try:
        return JobResult.objects.get(pk=result_id, owner=owner)
    except (JobResult.DoesNotExist, ValidationError, ValueError, TypeError):
        raise NotFound("No such result.") from None
