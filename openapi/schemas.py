"""The spec's building blocks: schema-only serializers, the answers and the parameters shared.

Nothing here validates or renders a request; the views do that. These only tell drf-spectacular
what the bodies look like (the error shape, the list envelope, the submission, job types, the
starter's endpoints), for the table in `openapi.operations`.
"""
from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse
from rest_framework import serializers

from core.error_codes import ERROR_CODE_HELP
from core.errors import OUTAGES
from core.pagination import NewestFirstCursorPagination
from jobs.models import Job
from jobs.registry import job_types_all
from jobs.selectors import NO_JOB
from jobs.serializers import JobListItemSerializer, JobResultListItemSerializer, JobSerializer
from webhooks.api import DeliveryPagination, DeliverySerializer
from webhooks.endpoint_api import EndpointPagination, EndpointSerializer

# --- The one error shape -----------------------------------------------------------------------


class ErrorDetailSerializer(serializers.Serializer):
    # A string, not an enum: generated clients parse an enum into a closed type, and would fail to
    # parse an error whose code came in a later release. The description lists the codes.
    code = serializers.CharField(help_text=ERROR_CODE_HELP)
    message = serializers.CharField(help_text="A human-readable sentence; may change.")
    details = serializers.JSONField(
        allow_null=True,
        help_text="Structured details (field errors, valid values, ...) or null.",
    )


class ErrorSerializer(serializers.Serializer):
    """Every error answer of the service, whatever the status code."""

    error = ErrorDetailSerializer()


def error_example(status: int, code: str, message: str, details: Any = None) -> OpenApiExample:
    """An example answer of the one error shape, shown under `status`."""
    return OpenApiExample(
        code,
        value={"error": {"code": code, "message": message, "details": details}},
        status_codes=[str(status)],
        response_only=True,
    )


NOT_FOUND = "No such resource for this API key (another client's ids answer 404 too). Code: `not_found`."
# Each documented status: a description naming its codes, and examples of real answers.
_ERRORS: dict[int, tuple[str, list[OpenApiExample]]] = {
    400: (
        "The request is invalid; nothing was created. Codes: `invalid` (field errors in "
        "`details`), `invalid_payload`, `unknown_job_name`, `job_type_unavailable`, "
        "`malformed_json`, `invalid_json` (JSON that cannot be stored: a U+0000 character or "
        "a lone surrogate such as `\\ud800`), "
        "`json_too_deep`, `invalid_callback_url`, `invalid_filter` (a filter's value, e.g. a "
        "date out of range; a parameter the list does not take, or one given twice), `invalid_cursor` (a cursor this list did not issue), "
        "`invalid_parameter` (e.g. `page_size`), `invalid_header` (e.g. `Idempotency-Key`), "
        "`missing_parameter`, `bad_request` (e.g. an invalid Content-Length).",
        [
            error_example(
                400,
                "invalid_payload",
                "The payload is not valid for api.tasks.long_running_task.",
                {"payload": {"duration": ["Input should be less than or equal to 3600"]}},
            ),
            error_example(
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
            error_example(
                401, "not_authenticated", "Authentication credentials were not provided."
            )
        ],
    ),
    404: (NOT_FOUND, [error_example(404, "not_found", NO_JOB)]),  # a job's; others say their own
    408: (
        "The request body did not arrive within the configured time (10 s by default, "
        "`WEB_BODY_READ_SECONDS`); the connection is closed. Code: `request_timeout`.",
        [error_example(408, "request_timeout", "The request body did not arrive within 10 seconds.")],
    ),
    409: (  # a submission's; the other operations that answer 409 say their own (`described`)
        ("A request with this Idempotency-Key is still being processed: retry shortly, with the same "
         "key and body. Code: `idempotency_key_in_progress`."),
        [error_example(409, "idempotency_key_in_progress",
                       "A request with this Idempotency-Key is still being processed; retry shortly.")],
    ),
    413: (
        "The request body is larger than the configured limit (1 MiB by default). "
        "Code: `payload_too_large`.",
        [error_example(413, "payload_too_large", "The request body is larger than 1048576 bytes.")],
    ),
    415: (
        "The body is not `application/json`. Code: `unsupported_media_type`.",
        [error_example(415, "unsupported_media_type", 'Unsupported media type "text/plain" in request.')],
    ),
    422: (
        "This Idempotency-Key was already used with a different body or `Cancel-After`, or sent "
        "to another submission endpoint. Code: `idempotency_key_reused`.",
        [error_example(422, "idempotency_key_reused", "This Idempotency-Key was used with a different request body.")],
    ),
    429: (
        "Too many requests per minute in this endpoint's scope (every endpoint has one: submissions, reads, writes, "
        "sensitive writes), or, for a submission, too many unfinished jobs or persisted results over the quota or an "
        "endpoint's backlog full, or, for a job that calls a model, the client's model tokens of the UTC day spent "
        "(its `Retry-After` is the seconds to midnight UTC), or too many requests with a wrong API key from this "
        "address (its requests with a key that has not worked yet are refused unchecked), or, naming a callback host, "
        "too many of the client's requests waiting for host names to resolve; wait `Retry-After` seconds. Codes: "
        "`rate_limited`, `too_many_unfinished_jobs`, `result_quota_exceeded`, `webhook_backlog_full`, "
        "`model_budget_exhausted`, `too_many_failed_authentications`, `too_many_callback_lookups`.",
        [error_example(429, "rate_limited", "Too many requests; retry later.", {"retry_after_seconds": 12})],
    ),
    503: (  # core/errors.py OUTAGES
        "The service cannot serve the request for the moment: its database is out of reach, or "
        "(embedded mode, `make run`) the disk it keeps its data on is full. Retry after "
        "`Retry-After` seconds; send a submission's `Idempotency-Key` again with it, so that it "
        "makes one job however many times it is sent. Codes: "
        + ", ".join(f"`{down.code}` (`Retry-After: {down.retry_after}`)" for down in OUTAGES)
        + ".",
        [error_example(503, down.code, down.message) for down in OUTAGES],
    ),
}


def error_responses(
    *statuses: int, described: dict[int, tuple[str, OpenApiExample]] | None = None
) -> dict[int, OpenApiResponse]:
    """The documented error answers for `statuses`, and 429 (every endpoint is rate limited)
    and 503 (any request may meet an outage), all with the one error schema.

    `described` replaces the generic text and example of a status for one operation; for 503 it
    comes before the outage's, which the operation may answer still."""
    responses = {}
    for status in sorted({*statuses, 429, 503}):
        description, examples = _ERRORS[status]
        if described and status in described:
            own, example = described[status]
            outage = status == 503
            description, examples = (f"{own} {description}", [example, *examples]) if outage else (own, [example])
        responses[status] = OpenApiResponse(
            response=ErrorSerializer, description=description, examples=examples
        )
    return responses


# A list's 400s: what its query string can get wrong.
LIST_400: dict[int, tuple[str, OpenApiExample]] = {
    400: (
        "The query is invalid. Codes: `invalid_filter` (a filter's value, e.g. a date out of range; a parameter this "
        "list does not take, e.g. a misspelt filter, or any of its parameters given twice: refused, never ignored; "
        "a bad `page_size` or `cursor` named too), `invalid_cursor` (a cursor this list did not issue: altered, or "
        "from another list), `invalid_parameter` (`page_size` not a whole number of at least 1; a bad `cursor` too).",
        error_example(
            400,
            "invalid_cursor",
            "Invalid cursor: its position is not a date and time. Take cursors from `next` or "
            "`previous` as they are, or start again without one.",
            {"cursor": ["its position is not a date and time"]},
        ),
    )
}


# --- Success answers and shared parameters -----------------------------------------------------


def example_response(
    serializer: Any, description: str, name: str, value: Any, *, status: str | None = None
) -> OpenApiResponse:
    """A success answer with one example; `status` pins the example to a non-default status."""
    return OpenApiResponse(
        serializer,
        description=description,
        examples=[
            OpenApiExample(
                name,
                value=value,
                status_codes=[status] if status else None,
                response_only=True,
            )
        ],
    )


IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description="Makes a retried submission safe: within 24 h, a repeat with the same key, body and "
    "`Cancel-After` to the same endpoint answers 202 with the first job (or batch) and creates nothing "
    "(`Prefer: wait` may differ); with another body or `Cancel-After`, or to another submission "
    "endpoint, 422; while the first is still being processed, 409. Up to 255 bytes (UTF-8 as it is sent).",
)
JOB_ID = OpenApiParameter("job_id", OpenApiTypes.UUID, OpenApiParameter.PATH)
CANCEL_AFTER = OpenApiParameter(
    "Cancel-After",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description="A deadline relative to now, as Replicate takes it: seconds (`90`), or a number "
    "with a unit `s`, `m` or `h` (`90s`, `5m`). The job is canceled if not final by then "
    "(`error.type` `deadline_exceeded`). Not with a `deadline` in the body.",
)
METADATA_FILTER = OpenApiParameter(
    "metadata",
    {"type": "object", "propertyNames": {"minLength": 1}, "additionalProperties": {"type": "string"}},
    OpenApiParameter.QUERY,
    style="deepObject",
    explode=True,
    description="Only jobs whose metadata holds each of these keys with its value: "
    "`metadata[order]=42&metadata[team]=a`. Any other parameter named `metadata...` "
    "(`metadata.team`, `metadata[]`), or a key given twice, is `400 invalid_filter`.",
)


def query_parameter(name: str, type_: Any, description: str, **kwargs: Any) -> OpenApiParameter:
    """A query-string parameter; `kwargs` as for `OpenApiParameter`."""
    return OpenApiParameter(name, type_, OpenApiParameter.QUERY, description=description, **kwargs)


CURSOR = query_parameter(
    "cursor",
    OpenApiTypes.STR,
    "Opaque page cursor: take it from `next` or `previous`, never build it. A cursor this "
    "list did not issue (altered, or from another list) answers 400 `invalid_cursor`.",
)


def _page_size(pagination: type[NewestFirstCursorPagination]) -> OpenApiParameter:
    return query_parameter(
        "page_size",
        OpenApiTypes.INT,
        f"Items per page: default {pagination.page_size}; larger values give {pagination.max_page_size}. "
        "Not a whole number of at least 1: 400 `invalid_parameter`.",
    )


# Each list's, read from the pagination its view pages with (the jobs' and the results': the default).
PAGE_SIZE = _page_size(NewestFirstCursorPagination)
ENDPOINT_PAGE_SIZE = _page_size(EndpointPagination)
DELIVERY_PAGE_SIZE = _page_size(DeliveryPagination)

# --- The list envelope -------------------------------------------------------------------------


class _PageLinks(serializers.Serializer):
    next = serializers.URLField(
        allow_null=True, help_text="URL of the next (older) page, or null on the last page."
    )
    previous = serializers.URLField(
        allow_null=True, help_text="URL of the previous (newer) page, or null on the first page."
    )


class JobPageSerializer(_PageLinks):
    results = JobListItemSerializer(many=True)


class JobResultPageSerializer(_PageLinks):
    results = JobResultListItemSerializer(many=True)


class DeliveryPageSerializer(_PageLinks):
    results = DeliverySerializer(many=True)


class EndpointPageSerializer(_PageLinks):
    results = EndpointSerializer(many=True)


# --- Job submission ----------------------------------------------------------------------------


class JobSubmissionSerializer(serializers.Serializer):
    """Stand-in for the submission body: `openapi.extensions` builds its schema from job types."""


class JobBatchSubmissionSerializer(serializers.Serializer):
    jobs = serializers.ListField(
        child=JobSubmissionSerializer(),
        min_length=1,
        max_length=1000,
        help_text="Up to API_MAX_BATCH_SIZE (1,000) submissions, each as `POST /api/jobs/` takes one.",
    )


class JobBatchSerializer(serializers.Serializer):
    jobs = JobSerializer(many=True, help_text="The jobs, in the order they were submitted.")


# --- Job types ---------------------------------------------------------------------------------


class RetryLimitsSerializer(serializers.Serializer):
    max_attempts = serializers.IntegerField(help_text="Runs in all, the first included.")
    max_backoff_seconds = serializers.IntegerField(help_text="The longest wait between a failure and the next run.")


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
    max_payload_bytes = serializers.IntegerField(
        help_text="The largest payload it accepts, in bytes of compact UTF-8 JSON (larger: 413)."
    )
    retry_limits = RetryLimitsSerializer(
        allow_null=True, help_text="What a submission's `retry` policy may ask; null: the type does not retry."
    )


class JobTypePageSerializer(_PageLinks):
    results = JobTypeSerializer(many=True)


# --- The starter's endpoints -------------------------------------------------------------------


class LegacyJobSubmissionSerializer(serializers.Serializer):
    job_name = serializers.ChoiceField(
        choices=[job_type.name for job_type in job_types_all()],
        help_text="A registered job type (see `GET /api/job-types/`).",
    )
    payload = serializers.DictField(
        required=False, help_text="The job type's payload; defaults to `{}`."
    )


class LegacyJobCreatedSerializer(serializers.Serializer):
    task_id = serializers.UUIDField(help_text="The job's id.")


class LegacyJobStatusSerializer(serializers.Serializer):
    task_id = serializers.UUIDField(help_text="The job's id.")
    status = serializers.ChoiceField(choices=Job.Status.choices)
    result = serializers.JSONField(allow_null=True, help_text="The result once SUCCESS, else null.")
