"""Schema-only serializers and examples: shapes the views build by hand, declared once for the spec.

Nothing here validates or renders a request; the views do that. These classes only tell
drf-spectacular what the bodies look like (the error shape, the list envelope, job types,
the starter's endpoints, webhook events).
"""
from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiExample, OpenApiResponse
from rest_framework import serializers

from jobs.models import Job
from jobs.serializers import JobResultSerializer, JobSerializer

# --- The one error shape -----------------------------------------------------------------------


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(
        help_text="Machine-readable error code, stable across releases (e.g. `invalid_payload`). "
        "Branch on this, not on the message."
    )
    message = serializers.CharField(help_text="A human-readable sentence; may change.")
    details = serializers.JSONField(
        allow_null=True,
        help_text="Structured details (field errors, valid values, ...) or null.",
    )


class ErrorSerializer(serializers.Serializer):
    """Every error answer of the service, whatever the status code."""

    error = ErrorDetailSerializer()


def _error_example(status: int, code: str, message: str, details: Any = None) -> OpenApiExample:
    return OpenApiExample(
        code,
        value={"error": {"code": code, "message": message, "details": details}},
        status_codes=[str(status)],
        response_only=True,
    )


# Each documented status: a description naming its codes, and examples of real answers.
_ERRORS: dict[int, tuple[str, list[OpenApiExample]]] = {
    400: (
        "The request is invalid; nothing was created. Codes: `invalid` (field errors in "
        "`details`), `invalid_payload`, `unknown_job_name`, `job_type_unavailable`, "
        "`malformed_json`, `invalid_json` (a U+0000 character), `json_too_deep`, "
        "`invalid_callback_url`, `invalid_filter`, "
        "`invalid_header`, `missing_parameter`, `bad_request` (e.g. an invalid Content-Length).",
        [
            _error_example(
                400,
                "invalid_payload",
                "The payload is not valid for api.tasks.long_running_task.",
                {"payload": {"duration": ["Input should be less than or equal to 3600"]}},
            ),
            _error_example(
                400,
                "unknown_job_name",
                "Unknown job_name 'nope'; valid job names: api.tasks.hello_world, ...",
                {"valid_job_names": ["api.tasks.hello_world", "api.tasks.long_running_task"]},
            ),
        ],
    ),
    401: (
        "No API key, or an unknown or revoked one. Send `Authorization: Bearer <key>`. "
        "Codes: `not_authenticated`, `authentication_failed`.",
        [
            _error_example(
                401, "not_authenticated", "Authentication credentials were not provided."
            )
        ],
    ),
    404: (
        "No such resource for this API key (another client's ids answer 404 too), "
        "or an invalid pagination cursor. Code: `not_found`.",
        [_error_example(404, "not_found", "No such job.")],
    ),
    409: (
        "Conflict with the resource's state. Codes: `job_already_final` (cancel), "
        "`idempotency_key_in_progress` (a request with this Idempotency-Key is still running; "
        "retry shortly).",
        [_error_example(409, "job_already_final", "The job is already SUCCESS.")],
    ),
    413: (
        "The request body is larger than the configured limit (1 MiB by default). "
        "Code: `payload_too_large`.",
        [_error_example(413, "payload_too_large", "The request body is larger than 1048576 bytes.")],
    ),
    415: (
        "The body is not `application/json`. Code: `unsupported_media_type`.",
        [
            _error_example(
                415, "unsupported_media_type", 'Unsupported media type "text/plain" in request.'
            )
        ],
    ),
    422: (
        "This Idempotency-Key was already used with a different body. "
        "Code: `idempotency_key_reused`.",
        [
            _error_example(
                422,
                "idempotency_key_reused",
                "This Idempotency-Key was used with a different request body.",
            )
        ],
    ),
    429: (
        "Too many submissions per minute, or too many unfinished jobs; wait `Retry-After` "
        "seconds. Codes: `rate_limited`, `too_many_unfinished_jobs`.",
        [
            _error_example(
                429, "rate_limited", "Too many requests; retry later.", {"retry_after_seconds": 12}
            )
        ],
    ),
    503: (
        "A dependency is unreachable; `details.failed` names which. Code: `not_ready`.",
        [
            _error_example(
                503, "not_ready", "Unreachable: broker.", {"failed": ["broker"]}
            )
        ],
    ),
}


def error_responses(
    *statuses: int, described: dict[int, tuple[str, OpenApiExample]] | None = None
) -> dict[int, OpenApiResponse]:
    """The documented error answers for `statuses`, all with the one error schema.

    `described` replaces the generic text and example of a status for one operation."""
    responses = {}
    for status in statuses:
        description, examples = _ERRORS[status]
        if described and status in described:
            description, example = described[status]
            examples = [example]
        responses[status] = OpenApiResponse(
            response=ErrorSerializer, description=description, examples=examples
        )
    return responses


def error_example(status: int, code: str, message: str, details: Any = None) -> OpenApiExample:
    return _error_example(status, code, message, details)


# --- The list envelope -------------------------------------------------------------------------


class _PageLinks(serializers.Serializer):
    next = serializers.URLField(
        allow_null=True, help_text="URL of the next (older) page, or null on the last page."
    )
    previous = serializers.URLField(
        allow_null=True, help_text="URL of the previous (newer) page, or null on the first page."
    )


class JobPageSerializer(_PageLinks):
    results = JobSerializer(many=True)


class JobResultPageSerializer(_PageLinks):
    results = JobResultSerializer(many=True)


# --- Job types ---------------------------------------------------------------------------------


class JobTypeSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="The `job_name` to submit.")
    description = serializers.CharField()
    payload_schema = serializers.DictField(
        help_text="JSON Schema of the `payload` this type accepts."
    )
    persists_result = serializers.BooleanField(
        help_text="Whether a successful result is also kept under `/api/results/`."
    )
    available = serializers.BooleanField(
        help_text="False when the type cannot run right now (missing configuration)."
    )
    unavailable_reason = serializers.CharField(
        allow_null=True, help_text="Why the type is unavailable, or null."
    )


class JobTypePageSerializer(_PageLinks):
    results = JobTypeSerializer(many=True)


# --- The starter's endpoints -------------------------------------------------------------------


class LegacyJobCreatedSerializer(serializers.Serializer):
    task_id = serializers.UUIDField(help_text="The job's id.")


class LegacyJobStatusSerializer(serializers.Serializer):
    task_id = serializers.UUIDField(help_text="The job's id.")
    status = serializers.ChoiceField(choices=Job.Status.choices)
    result = serializers.JSONField(allow_null=True, help_text="The result once SUCCESS, else null.")


# --- Examples ----------------------------------------------------------------------------------

JOB_EXAMPLE: dict[str, Any] = {
    "id": "3f0c5a6e-8a0e-4c59-9a53-6d1e3b2f7c11",
    "job_name": "api.tasks.long_running_task",
    "status": "STARTED",
    "progress": {"current": 3, "total": 10, "message": "slept 3 of 10 s"},
    "payload": {"duration": 10, "message": "hi"},
    "result": None,
    "error": None,
    "callback_url": "https://example.com/hooks/jobs",
    "webhook_events": ["job.canceled", "job.failed", "job.succeeded"],
    "created_at": "2026-11-28T14:00:00.000000Z",
    "started_at": "2026-11-28T14:00:00.150000Z",
    "finished_at": None,
}

JOB_DONE_EXAMPLE: dict[str, Any] = {
    **JOB_EXAMPLE,
    "status": "SUCCESS",
    "progress": {"current": 10, "total": 10, "message": "done"},
    "result": "Slept for 10 seconds. Message: hi",
    "finished_at": "2026-11-28T14:00:10.200000Z",
}

RESULT_EXAMPLE: dict[str, Any] = {
    "id": 42,
    "job_id": "9b2d7c0a-1f4e-4b8e-8d5a-2c6f0e9a1b33",
    "task_name": "api.tasks.save_task_result_test_task",
    "result": {"invoice": 1234, "total": "19.90"},
    "created_at": "2026-11-28T14:01:00.000000Z",
}
