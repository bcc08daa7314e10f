"""Reads of jobs and persisted results, always scoped to their owner."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import QuerySet
from django.db.models.fields.json import KeyTextTransform

from core.errors import NotFound
from core.models import Client
from jobs import sql
from jobs.models import Job, JobResult


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


def job_get(*, owner: Client, job_id: uuid.UUID | str) -> Job:
    """The owner's job; another owner's id and a malformed id both answer 404."""
    try:
        # What UUIDField accepts: any form uuid.UUID parses.
        job_uuid = job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))
    except ValueError:
        raise NotFound("No such job.") from None
    job = sql.job_of_owner(job_uuid, owner.pk)
    if job is None:
        raise NotFound("No such job.")
    return job


def job_list(*, owner: Client) -> QuerySet[Job]:
    return Job.objects.filter(owner=owner)


def jobs_with_metadata(jobs: QuerySet[Job], metadata: dict[str, str]) -> QuerySet[Job]:
    """The jobs whose metadata holds every key with its value. On PostgreSQL as one containment
    (`metadata @> ...`), which the GIN index `job_metadata` serves; elsewhere key by key."""
    if not metadata:
        return jobs
    if connection.vendor == "postgresql":
        return jobs.filter(metadata__contains=metadata)
    for number, (key, value) in enumerate(metadata.items()):
        name = f"metadata_{number}"
        jobs = jobs.alias(**{name: KeyTextTransform(key, "metadata")}).filter(**{name: value})
    return jobs


def result_list(*, owner: Client) -> QuerySet[JobResult]:
    return JobResult.objects.filter(owner=owner)


def result_get(*, owner: Client, result_id: int) -> JobResult:
    try:
        return JobResult.objects.get(pk=result_id, owner=owner)
    except (JobResult.DoesNotExist, ValidationError, ValueError, TypeError):
        raise NotFound("No such result.") from None
