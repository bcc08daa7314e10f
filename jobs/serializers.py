"""How a job and a persisted result look over HTTP (and inside webhook events)."""
from __future__ import annotations

from typing import Any, Literal

from rest_framework import serializers

from core.fields import JsonIntegerField
from jobs.models import Job, JobResult
from jobs.shapes import (
    error_shown,
    metadata_shown,
    progress_shown,
    webhook_events_shown,
)


# The fields of these two declare the shape (OpenAPI); the value shown is jobs.shapes', whatever
# JSON the row holds. (Comments, not docstrings: drf-spectacular would publish a docstring.)
class JobProgressSerializer(serializers.Serializer):
    current = serializers.IntegerField()
    total = serializers.IntegerField()
    message = serializers.CharField(allow_blank=True)

    def to_representation(self, instance: Any) -> dict[str, Any] | None:  # type: ignore[override]  # null for an unreadable row
        return progress_shown(instance)


class JobErrorSerializer(serializers.Serializer):
    type = serializers.CharField(help_text="Machine-readable failure kind, e.g. `time_limit_exceeded`.")
    message = serializers.CharField()

    def to_representation(self, instance: Any) -> dict[str, str] | None:  # type: ignore[override]  # as above
        return error_shown(instance)


# As those two: the spec's object of strings, and list of event types
# (openapi.extensions.JobSerializerScheme), jobs.shapes' values. Each reads the whole job
# (source="*"): given the column, a serializer shows a JSON null there as null without asking the
# field, where the job's GET shows {} and the default events.
class _MetadataField(serializers.DictField):
    def to_representation(self, job: Job) -> dict[str, str]:  # type: ignore[override]  # the job, not the column
        return metadata_shown(job.metadata)


class _WebhookEventsField(serializers.JSONField):
    def to_representation(self, job: Job) -> list[str]:  # type: ignore[override]  # as above
        return webhook_events_shown(job.webhook_events)


class JobRetrySerializer(serializers.Serializer):
    max_attempts = JsonIntegerField(min_value=1, help_text="Runs in all, the first included.")
    backoff_seconds = JsonIntegerField(min_value=0, help_text="Wait between a failure and the next run.")


class JobSerializer(serializers.ModelSerializer):
    progress = JobProgressSerializer(allow_null=True, read_only=True)
    error = JobErrorSerializer(allow_null=True, read_only=True)
    result = serializers.JSONField(allow_null=True, read_only=True)
    payload = serializers.JSONField(read_only=True)
    metadata = _MetadataField(source="*", child=serializers.CharField(), read_only=True)
    webhook_events = _WebhookEventsField(source="*", read_only=True)
    scheduled_for = serializers.DateTimeField(source="run_at", allow_null=True, read_only=True)
    aborted = serializers.BooleanField(read_only=True)
    retry = JobRetrySerializer(allow_null=True, read_only=True)

    class Meta:
        model = Job
        fields = [
            "id",
            "job_name",
            "status",
            "progress",
            "payload",
            "result",
            "error",
            "callback_url",
            "webhook_events",
            "webhook_endpoints",
            "metadata",
            "scheduled_for",
            "deadline",
            "aborted",
            "attempt",
            "retry",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


# The JSON fields a list may leave out, with the sentence the API documents for them.
Omittable = Literal["payload", "result"]
OMITTED_HELP = (
    "Fields left out of this list item (null above) because their JSON is larger than "
    "API_LIST_INLINE_MAX_BYTES (4 KiB by default); the item's own URL has them whole."
)


class _LeavesOutLargeJson(serializers.Serializer):
    """A list item built from a row annotated by jobs.selectors: `omitted` names which of its
    `omittable` JSON fields the row has stored but not inline."""

    omittable: tuple[Omittable, ...] = ()
    omitted = serializers.SerializerMethodField(help_text=OMITTED_HELP)

    def get_omitted(self, row: Any) -> list[Omittable]:
        return [
            name for name in self.omittable
            if getattr(row, f"{name}_stored") and getattr(row, f"{name}_inline") is None
        ]


class JobListItemSerializer(_LeavesOutLargeJson, JobSerializer):
    """A job in a list: as `GET /api/jobs/{job_id}/` shows it, except that a `payload` or
    `result` larger than API_LIST_INLINE_MAX_BYTES is null, and named in `omitted`."""

    omittable = ("payload", "result")
    payload = serializers.JSONField(source="payload_inline", allow_null=True, read_only=True)
    result = serializers.JSONField(source="result_inline", allow_null=True, read_only=True)

    class Meta(JobSerializer.Meta):
        fields = [*JobSerializer.Meta.fields, "omitted"]
        read_only_fields = fields


# Formats datetimes exactly as JobSerializer's fields do (ISO 8601, "Z" for UTC).
_DATETIME = serializers.DateTimeField()


def _datetime(value: Any) -> str | None:
    return None if value is None else _DATETIME.to_representation(value)


def job_representation(job: Job) -> dict[str, Any]:
    """The job exactly as `GET /api/jobs/<id>/` shows it: JobSerializer's output, built directly.

    Why not `JobSerializer(job).data`: a ModelSerializer builds its fields on every instance,
    as much CPU as the rest of a poll (docs/benchmarks.md, "Fixes"). JobSerializer
    stays the declared shape (OpenAPI, lists); a test holds the two outputs equal.
    """
    return {
        "id": str(job.id),
        "job_name": job.job_name,
        "status": job.status,
        "progress": progress_shown(job.progress),
        "payload": job.payload,
        "result": job.result,
        "error": error_shown(job.error),
        "callback_url": job.callback_url,
        "webhook_events": webhook_events_shown(job.webhook_events),
        "webhook_endpoints": job.webhook_endpoints,
        "metadata": metadata_shown(job.metadata),
        "scheduled_for": _datetime(job.run_at),
        "deadline": _datetime(job.deadline),
        "aborted": job.aborted,
        "attempt": job.attempt,
        "retry": job.retry,
        "created_at": _datetime(job.created_at),
        "started_at": _datetime(job.started_at),
        "finished_at": _datetime(job.finished_at),
    }


class JobResultSerializer(serializers.ModelSerializer):
    job_id = serializers.UUIDField(allow_null=True, read_only=True)
    result = serializers.JSONField(allow_null=True, read_only=True)

    class Meta:
        model = JobResult
        fields = ["id", "job_id", "task_name", "result", "created_at"]
        read_only_fields = fields


class JobResultListItemSerializer(_LeavesOutLargeJson, JobResultSerializer):
    """A persisted result in a list: as `GET /api/results/{result_id}/` shows it, except that a
    `result` larger than API_LIST_INLINE_MAX_BYTES is null, and named in `omitted`."""

    omittable = ("result",)
    result = serializers.JSONField(source="result_inline", allow_null=True, read_only=True)

    class Meta(JobResultSerializer.Meta):
        fields = [*JobResultSerializer.Meta.fields, "omitted"]
        read_only_fields = fields


# --- A client's limits (GET /api/limits/) ----------------------------------------------------------

_NO_LIMIT = " Null: no limit."


class RateLimitSerializer(serializers.Serializer):
    limit = serializers.IntegerField(allow_null=True, help_text="Requests a minute before 429." + _NO_LIMIT)


class CountedLimitSerializer(serializers.Serializer):
    limit = serializers.IntegerField(allow_null=True, help_text="The most allowed." + _NO_LIMIT)
    used = serializers.IntegerField(help_text="How much the client has now.")


class DailyLimitSerializer(CountedLimitSerializer):
    renews_at = serializers.DateTimeField(help_text="When `used` starts again from 0: the next midnight UTC.")


class EndpointBacklogSerializer(serializers.Serializer):
    endpoint_id = serializers.UUIDField(help_text="The endpoint, as `webhook_backlog_full`'s `details.endpoint_id`.")
    waiting_deliveries = serializers.IntegerField(
        help_text="Its deliveries waiting for its pace, as `webhook_backlog_full`'s `details.waiting_deliveries`."
    )


class WebhookBacklogSerializer(serializers.Serializer):
    limit = serializers.IntegerField(
        allow_null=True,
        help_text="The most deliveries one endpoint may have waiting (`webhook_backlog_full`'s "
        "`details.max_waiting_deliveries`)." + _NO_LIMIT,
    )
    used = serializers.IntegerField(help_text="The deliveries waiting at the fullest endpoint; 0 when none waits.")
    endpoints = EndpointBacklogSerializer(
        many=True, help_text="Each endpoint with deliveries waiting, the fullest first (empty when none waits)."
    )


class LimitsSerializer(serializers.Serializer):
    """The calling client's limits, each as it applies to this client (the operator's override,
    or the setting every client shares), with what it uses of it now."""

    submissions_per_minute = RateLimitSerializer(
        help_text="Jobs submitted a minute (a batch counts each of its jobs): past it, 429 `rate_limited`."
    )
    reads_per_minute = RateLimitSerializer(help_text="GET requests a minute: past it, 429 `rate_limited`.")
    writes_per_minute = RateLimitSerializer(
        help_text="Other writes (cancel, webhook endpoints) a minute: past it, 429 `rate_limited`."
    )
    sensitive_writes_per_minute = RateLimitSerializer(
        help_text="Redeliveries and secret rotations a minute: past it, 429 `rate_limited`."
    )
    unfinished_jobs = CountedLimitSerializer(
        help_text="Jobs not final yet (PENDING, STARTED, RETRY): a submission past it gets 429 `too_many_unfinished_jobs`."
    )
    running_jobs = CountedLimitSerializer(
        help_text="Jobs running at once: the others wait, PENDING, in order; nothing is refused."
    )
    result_bytes = CountedLimitSerializer(
        help_text="Bytes the persisted results (`/api/results/`) hold: at or past it, jobs of types that "
        "persist their result get 429 `result_quota_exceeded`."
    )
    job_bytes = CountedLimitSerializer(
        help_text="Bytes the payloads and metadata of the client's stored jobs hold (finished ones too, until "
        "`JOB_RETENTION_DAYS` prunes them): at or past it, submissions get 429 `job_storage_quota_exceeded`."
    )
    model_tokens_today = DailyLimitSerializer(
        help_text="Model tokens spent this UTC day: at or past it, jobs of types that call a model get "
        "429 `model_budget_exhausted`."
    )
    webhook_endpoints = CountedLimitSerializer(
        help_text="Registered webhook endpoints: at it, registering another gets 409 `too_many_endpoints`. "
        "Never null: 0 allows none."
    )
    webhook_backlog = WebhookBacklogSerializer(
        help_text="Deliveries waiting for a paced endpoint's pace (its `rate_limit_per_second`), per endpoint: "
        "while one endpoint has `limit` or more, jobs that would reach the endpoints get 429 "
        "`webhook_backlog_full`."
    )
    waits_and_streams_per_process = CountedLimitSerializer(
        help_text="Event streams and `Prefer: wait` waits held open at once, counted by each API process on its "
        "own: `limit` is the most the client may hold in each process, `used` how many it holds in the "
        "process that answered this request (not those in the service's other processes). Past `limit` in "
        "a process, a stream there gets 429 `too_many_open_streams` and a wait is answered at once, without "
        "`Preference-Applied`; a process holding `API_MAX_WAITERS_PER_PROCESS` of all clients' refuses "
        "sooner (503 `too_many_streams`). Never null: 0 allows none."
    )
