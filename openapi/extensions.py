"""drf-spectacular extensions that annotate the API's views from the outside.

The views stay plain DRF APIViews owned by their apps; this module tells the schema generator
what each operation takes and answers (operationIds chosen for generated method names,
summaries, every status with the one error schema, examples). Loaded by `openapi.urls`.
"""
from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import (
    OpenApiAuthenticationExtension,
    OpenApiSerializerExtension,
    OpenApiViewExtension,
)
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import serializers

from jobs.models import WEBHOOK_EVENT_TYPES, Job
from jobs.registry import job_types_all
from jobs.serializers import JobResultSerializer, JobSerializer
from openapi import schemas
from openapi.schemas import JOB_DONE_EXAMPLE, JOB_EXAMPLE, RESULT_EXAMPLE, error_responses

# --- Authentication ----------------------------------------------------------------------------


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "core.auth.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key, sent as `Authorization: Bearer <key>`. Create one with "
            "`python manage.py create_api_key NAME`.",
        }


# --- Job submission: one schema per job type ---------------------------------------------------


class JobSubmissionSerializer(serializers.Serializer):
    """Stand-in for the submission body; its schema is built from the job-type registry."""


def _variant_name(payload_title: str) -> str:
    return payload_title.removesuffix("Payload") + "JobSubmission"


class JobSubmissionScheme(OpenApiSerializerExtension):
    """`oneOf` the registered job types, discriminated by `job_name`; each with its payload."""

    target_class = JobSubmissionSerializer

    def get_name(self, auto_schema: Any, direction: Any) -> str:
        return "JobSubmission"

    def map_serializer(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        registry = auto_schema.registry
        variants: list[dict[str, str]] = []
        mapping: dict[str, str] = {}
        events = self._register(
            registry,
            "WebhookEventType",
            {"type": "string", "enum": list(WEBHOOK_EVENT_TYPES)},
        )
        for job_type in job_types_all():
            payload = job_type.payload_model.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            # Nested models become components of their own, as the refs above expect.
            for def_name, def_schema in payload.pop("$defs", {}).items():
                self._register(registry, def_name, def_schema)
            payload_ref = self._register(registry, payload["title"], payload)
            needs_payload = bool(payload.get("required"))
            variant = {
                "type": "object",
                # No `title`: generators would name the class after it instead of the component.
                "description": f"`{job_type.name}`: {job_type.description}",
                "properties": {
                    "job_name": {"type": "string", "const": job_type.name},
                    "payload": {
                        **payload_ref,
                        "description": "Validated at submission against this schema."
                        + ("" if needs_payload else " Defaults to `{}`."),
                    },
                    "callback_url": {
                        "type": "string",
                        "maxLength": 2000,
                        "description": "Absolute http(s) URL that receives the signed job "
                        "events (see the webhooks section). Empty or absent: no webhooks.",
                    },
                    "webhook_events": {
                        "type": "array",
                        "items": events,
                        "minItems": 1,
                        "maxItems": len(WEBHOOK_EVENT_TYPES),
                        "description": "Which events the callback receives; default "
                        "`job.succeeded`, `job.failed`, `job.canceled`.",
                    },
                },
                "required": ["job_name", "payload"] if needs_payload else ["job_name"],
            }
            name = _variant_name(payload["title"])
            ref = self._register(registry, name, variant)
            variants.append(ref)
            mapping[job_type.name] = ref["$ref"]
        return {
            "oneOf": variants,
            "discriminator": {"propertyName": "job_name", "mapping": mapping},
        }

    @staticmethod
    def _register(registry: Any, name: str, schema: dict[str, Any]) -> dict[str, str]:
        component = ResolvedComponent(
            name=name, type=ResolvedComponent.SCHEMA, object=f"openapi:{name}", schema=schema
        )
        registry.register_on_missing(component)
        return component.ref


class JobSerializerScheme(OpenApiSerializerExtension):
    """The job as stored: `webhook_events` is a JSON list on the model, typed here."""

    target_class = "jobs.serializers.JobSerializer"

    def map_serializer(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        events = JobSubmissionScheme._register(
            auto_schema.registry,
            "WebhookEventType",
            {"type": "string", "enum": list(WEBHOOK_EVENT_TYPES)},
        )
        properties = schema["properties"]
        properties["webhook_events"] = {
            "type": "array",
            "items": events,
            "readOnly": True,
            "description": "Events sent to `callback_url`.",
        }
        properties["id"]["description"] = "The job's id (also its Celery task id)."
        properties["payload"]["description"] = "The payload as submitted."
        properties["result"]["description"] = (
            "The job's return value once SUCCESS (any JSON), else null."
        )
        properties["error"]["description"] = (
            "The job's own failure (`{type, message}`) once FAILURE, else null. "
            "Not an HTTP error."
        )
        properties["progress"]["description"] = "Last progress report of a running job, or null."
        # Empty when the job has no callback, which is not a URI: a plain string.
        properties["callback_url"] = {
            "type": "string",
            "readOnly": True,
            "description": "Where job events are sent; empty for none.",
        }
        return schema


# --- Views -------------------------------------------------------------------------------------

IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description="Makes a retried submission safe: within 24 h, a repeat with the same key and "
    "the same body answers 202 with the first job and creates nothing; with a different body, "
    "422; while the first is still being processed, 409. Up to 255 characters.",
)
CURSOR = OpenApiParameter(
    "cursor",
    OpenApiTypes.STR,
    OpenApiParameter.QUERY,
    description="Opaque page cursor: take it from `next` or `previous`, never build it.",
)
PAGE_SIZE = OpenApiParameter(
    "page_size",
    OpenApiTypes.INT,
    OpenApiParameter.QUERY,
    description="Items per page: default 50, at most 500.",
)
JOB_ID = OpenApiParameter("job_id", OpenApiTypes.UUID, OpenApiParameter.PATH)

SUBMIT_EXAMPLES = [
    OpenApiExample(
        "hello_world",
        value={"job_name": "api.tasks.hello_world", "payload": {"message": "there"}},
        request_only=True,
    ),
    OpenApiExample(
        "long_running_with_webhooks",
        value={
            "job_name": "api.tasks.long_running_task",
            "payload": {"duration": 10, "message": "hi"},
            "callback_url": "https://example.com/hooks/jobs",
        },
        request_only=True,
    ),
    OpenApiExample(
        "save_result",
        value={
            "job_name": "api.tasks.save_task_result_test_task",
            "payload": {"invoice": 1234, "total": "19.90"},
        },
        request_only=True,
    ),
]


def _job_response(description: str, example: dict[str, Any], status: str) -> OpenApiResponse:
    return OpenApiResponse(
        response=JobSerializer,
        description=description,
        examples=[OpenApiExample("job", value=example, status_codes=[status], response_only=True)],
    )


class JobListCreateApiScheme(OpenApiViewExtension):
    target_class = "jobs.api.JobListCreateApi"

    def view_replacement(self) -> Any:
        @extend_schema_view(
            post=extend_schema(
                operation_id="submit_job",
                summary="Submit a job",
                description="Validates the payload against the job type's schema and queues "
                "the job. The answer is `202 Accepted` with the job (status `PENDING`) and a "
                "`Location` to poll. Nothing is created when the answer is an error.\n\n"
                "The body is one of the job types below, chosen by `job_name`; "
                "`GET /api/job-types/` lists them at run time with their availability.",
                tags=["Jobs"],
                request=JobSubmissionSerializer,
                parameters=[IDEMPOTENCY_KEY],
                examples=SUBMIT_EXAMPLES,
                responses={
                    202: _job_response(
                        "Accepted: the job is queued.", {**JOB_EXAMPLE, "status": "PENDING",
                                                         "progress": None, "started_at": None},
                        "202",
                    ),
                    **error_responses(400, 401, 409, 413, 415, 422, 429),
                },
            ),
            get=extend_schema(
                operation_id="list_jobs",
                summary="List jobs",
                description="This API key's client's jobs, newest first, in pages. "
                "Follow `next` until it is null.",
                tags=["Jobs"],
                parameters=[
                    OpenApiParameter(
                        "status",
                        OpenApiTypes.STR,
                        OpenApiParameter.QUERY,
                        enum=[choice for choice, _ in Job.Status.choices],
                        description="Only jobs in this status.",
                    ),
                    OpenApiParameter(
                        "job_name", OpenApiTypes.STR, OpenApiParameter.QUERY,
                        description="Only jobs of this type.",
                    ),
                    OpenApiParameter(
                        "created_after", OpenApiTypes.DATETIME, OpenApiParameter.QUERY,
                        description="Only jobs created at or after this time (ISO 8601).",
                    ),
                    OpenApiParameter(
                        "created_before", OpenApiTypes.DATETIME, OpenApiParameter.QUERY,
                        description="Only jobs created before this time (ISO 8601).",
                    ),
                    CURSOR,
                    PAGE_SIZE,
                ],
                responses={
                    200: OpenApiResponse(
                        schemas.JobPageSerializer,
                        description="A page of jobs.",
                        examples=[
                            OpenApiExample(
                                "page",
                                value={
                                    "results": [JOB_DONE_EXAMPLE],
                                    "next": "http://127.0.0.1:8000/api/jobs/?cursor=cD0yMDI2",
                                    "previous": None,
                                },
                                response_only=True,
                            )
                        ],
                    ),
                    **error_responses(400, 401, 404),
                },
            ),
        )
        class Fixed(self.target_class):  # type: ignore[name-defined]
            pass

        return Fixed


class JobDetailApiScheme(OpenApiViewExtension):
    target_class = "jobs.api.JobDetailApi"

    def view_replacement(self) -> Any:
        @extend_schema_view(
            get=extend_schema(
                operation_id="get_job",
                summary="Get a job",
                description="The job's current state: poll this until `status` is final "
                "(`SUCCESS`, `FAILURE` or `REVOKED`). `progress` shows how far a running job is.",
                tags=["Jobs"],
                parameters=[JOB_ID],
                responses={
                    200: _job_response("The job.", JOB_DONE_EXAMPLE, "200"),
                    **error_responses(401, 404),
                },
            )
        )
        class Fixed(self.target_class):  # type: ignore[name-defined]
            pass

        return Fixed


class JobCancelApiScheme(OpenApiViewExtension):
    target_class = "jobs.api.JobCancelApi"

    def view_replacement(self) -> Any:
        @extend_schema_view(
            post=extend_schema(
                operation_id="cancel_job",
                summary="Cancel a job",
                description="A queued job becomes `REVOKED` at once; a running one stops at "
                "its next step, within a few seconds. Answers with the job as it is now. "
                "A job already in a final state answers 409.",
                tags=["Jobs"],
                parameters=[JOB_ID],
                request=None,
                responses={
                    202: _job_response(
                        "Cancellation requested.", {**JOB_EXAMPLE, "status": "STARTED"}, "202"
                    ),
                    **error_responses(401, 404, 409),
                },
            )
        )
        class Fixed(self.target_class):  # type: ignore[name-defined]
            pass

        return Fixed


class JobTypeListApiScheme(OpenApiViewExtension):
    target_class = "jobs.api.JobTypeListApi"

    def view_replacement(self) -> Any:
        @extend_schema_view(
            get=extend_schema(
                operation_id="list_job_types",
                summary="List job types",
                description="Every registered job type, with its payload's JSON Schema and "
                "whether it can run now. One page: `next` and `previous` are always null.",
                tags=["Job types"],
                responses={
                    200: OpenApiResponse(
                        schemas.JobTypePageSerializer,
                        description="All job types.",
                        examples=[
                            OpenApiExample(
                                "job types",
                                value={
                                    "results": [
                                        {
                                            "name": "api.tasks.hello_world",
                                            "description": "Returns 'hello world <message>'.",
                                            "payload_schema": {
                                                "type": "object",
                                                "properties": {"message": {"type": "string"}},
                                            },
                                            "persists_result": False,
                                            "available": True,
                                            "unavailable_reason": None,
                                        }
                                    ],
                                    "next": None,
                                    "previous": None,
                                },
                                response_only=True,
                            )
                        ],
                    ),
                    **error_responses(401),
                },
            )
        )
        class Fixed(self.target_class):  # type: ignore[name-defined]
            pass

        return Fixed


class ResultListApiScheme(OpenApiViewExtension):
    target_class = "jobs.api.ResultListApi"

    def view_replacement(self) -> Any:
        @extend_schema_view(
            get=extend_schema(
                operation_id="list_results",
                summary="List persisted results",
                description="Results kept by job types that persist them, newest first, in "
                "pages. A result outlives its job.",
                tags=["Results"],
                parameters=[
                    OpenApiParameter(
                        "task_name", OpenApiTypes.STR, OpenApiParameter.QUERY,
                        description="Only results of this job type (`job_name`).",
                    ),
                    CURSOR,
                    PAGE_SIZE,
                ],
                responses={
                    200: OpenApiResponse(
                        schemas.JobResultPageSerializer,
                        description="A page of results.",
                        examples=[
                            OpenApiExample(
                                "page",
                                value={"results": [RESULT_EXAMPLE], "next": None, "previous": None},
                                response_only=True,
                            )
                        ],
                    ),
                    **error_responses(400, 401, 404),
                },
            )
        )
        class Fixed(self.target_class):  # type: ignore[name-defined]
            pass

        return Fixed


class ResultDetailApiScheme(OpenApiViewExtension):
    target_class = "jobs.api.ResultDetailApi"

    def view_replacement(self) -> Any:
        @extend_schema_view(
            get=extend_schema(
                operation_id="get_result",
                summary="Get a persisted result",
                description="One persisted result.",
                tags=["Results"],
                parameters=[OpenApiParameter("result_id", OpenApiTypes.INT, OpenApiParameter.PATH)],
                responses={
                    200: OpenApiResponse(
                        JobResultSerializer,
                        description="The result.",
                        examples=[
                            OpenApiExample("result", value=RESULT_EXAMPLE, response_only=True)
                        ],
                    ),
                    **error_responses(401, 404),
                },
            )
        )
        class Fixed(self.target_class):  # type: ignore[name-defined]
            pass

        return Fixed


class LegacyJobApiScheme(OpenApiViewExtension):
    target_class = "jobs.api.LegacyJobApi"

    def view_replacement(self) -> Any:
        @extend_schema_view(
            post=extend_schema(
                operation_id="legacy_submit_job",
                summary="Submit a job (starter API)",
                description="The starter's submission endpoint, kept for its clients: the same "
                "validation, idempotency and limits as `POST /api/jobs/`, answering only the "
                "job's id. New clients use `POST /api/jobs/`.",
                tags=["Starter API"],
                deprecated=True,
                request=inline_legacy_request(),
                parameters=[IDEMPOTENCY_KEY],
                examples=[SUBMIT_EXAMPLES[0]],
                responses={
                    202: OpenApiResponse(
                        schemas.LegacyJobCreatedSerializer,
                        description="Accepted: the job is queued.",
                        examples=[
                            OpenApiExample(
                                "created",
                                value={"task_id": JOB_EXAMPLE["id"]},
                                response_only=True,
                            )
                        ],
                    ),
                    **error_responses(400, 401, 409, 413, 415, 422, 429),
                },
            ),
            get=extend_schema(
                operation_id="legacy_get_job_status",
                summary="Get a job's status (starter API)",
                description="The starter's polling endpoint, kept for its clients. "
                "New clients use `GET /api/jobs/{job_id}/`.",
                tags=["Starter API"],
                deprecated=True,
                parameters=[
                    OpenApiParameter(
                        "job_id", OpenApiTypes.STR, OpenApiParameter.QUERY, required=True,
                        description="The job's id (`task_id` from the submission).",
                    )
                ],
                responses={
                    200: OpenApiResponse(
                        schemas.LegacyJobStatusSerializer,
                        description="The job's status, and its result once SUCCESS.",
                        examples=[
                            OpenApiExample(
                                "done",
                                value={
                                    "task_id": JOB_EXAMPLE["id"],
                                    "status": "SUCCESS",
                                    "result": "hello world there",
                                },
                                response_only=True,
                            )
                        ],
                    ),
                    **error_responses(400, 401, 404),
                },
            ),
        )
        class Fixed(self.target_class):  # type: ignore[name-defined]
            pass

        return Fixed


def inline_legacy_request() -> type[serializers.Serializer]:
    class LegacyJobSubmissionSerializer(serializers.Serializer):
        job_name = serializers.ChoiceField(
            choices=[job_type.name for job_type in job_types_all()],
            help_text="A registered job type (see `GET /api/job-types/`).",
        )
        payload = serializers.DictField(
            required=False, help_text="The job type's payload; defaults to `{}`."
        )

    return LegacyJobSubmissionSerializer


# --- Webhook deliveries and the signing secret -------------------------------------------------
# `optional`: these views arrived with the webhooks work; the extensions stay quiet if a view is
# renamed (the schema then fails its own checks instead).

DELIVERY_EXAMPLE: dict[str, Any] = {
    "id": 7,
    "webhook_id": "msg_2b5e0e6d2f6a4c1e9a7d3f7b8c9d0e1f",
    "event_type": "job.succeeded",
    "url": "https://example.com/hooks/jobs",
    "state": "succeeded",
    "redelivery": False,
    "attempt_count": 2,
    "next_attempt_at": None,
    "created_at": "2026-11-28T14:00:10.300000Z",
    "finished_at": "2026-11-28T14:00:15.420000Z",
    "attempts": [
        {
            "number": 1,
            "started_at": "2026-11-28T14:00:10.310000Z",
            "duration_ms": 15000,
            "status_code": None,
            "response_body": "",
            "error": "timeout after 15 s",
        },
        {
            "number": 2,
            "started_at": "2026-11-28T14:00:15.400000Z",
            "duration_ms": 20,
            "status_code": 200,
            "response_body": "ok",
            "error": "",
        },
    ],
}


class JobDeliveryListApiScheme(OpenApiViewExtension):
    target_class = "jobs.api.JobDeliveryListApi"
    optional = True

    def view_replacement(self) -> Any:
        from webhooks.api import DeliverySerializer

        class DeliveryPageSerializer(schemas._PageLinks):
            results = DeliverySerializer(many=True)

        @extend_schema_view(
            get=extend_schema(
                operation_id="list_job_deliveries",
                summary="List a job's webhook deliveries",
                description="Every delivery of the job's events to its `callback_url`, newest "
                "first, each with all its attempts (status code, duration, the start of the "
                "response, or the network error). `state` is `pending` while attempts remain, "
                "then `succeeded` or `failed` (after the last retry).",
                tags=["Webhooks"],
                parameters=[JOB_ID, CURSOR, PAGE_SIZE],
                responses={
                    200: OpenApiResponse(
                        DeliveryPageSerializer,
                        description="A page of deliveries.",
                        examples=[
                            OpenApiExample(
                                "page",
                                value={"results": [DELIVERY_EXAMPLE], "next": None, "previous": None},
                                response_only=True,
                            )
                        ],
                    ),
                    **error_responses(401, 404),
                },
            )
        )
        class Fixed(self.target_class):  # type: ignore[name-defined]
            pass

        return Fixed


class JobRedeliverApiScheme(OpenApiViewExtension):
    target_class = "jobs.api.JobRedeliverApi"
    optional = True

    def view_replacement(self) -> Any:
        from webhooks.api import DeliverySerializer

        @extend_schema_view(
            post=extend_schema(
                operation_id="redeliver_job_event",
                summary="Redeliver a job's final event",
                description="Sends the job's final event (`job.succeeded`, `job.failed` or "
                "`job.canceled`) to its `callback_url` again, with the same body and the same "
                "`webhook-id`, for a receiver that lost it. Answers with the new delivery.",
                tags=["Webhooks"],
                parameters=[JOB_ID],
                request=None,
                responses={
                    202: OpenApiResponse(
                        DeliverySerializer,
                        description="The redelivery is queued.",
                        examples=[
                            OpenApiExample(
                                "delivery",
                                value={
                                    **DELIVERY_EXAMPLE,
                                    "id": 8,
                                    "state": "pending",
                                    "redelivery": True,
                                    "attempt_count": 0,
                                    "finished_at": None,
                                    "attempts": [],
                                },
                                response_only=True,
                            )
                        ],
                    ),
                    **error_responses(
                        401,
                        404,
                        409,
                        described={
                            409: (
                                "Codes: `nothing_to_redeliver` (the job has not finished, has "
                                "no `callback_url`, or its `webhook_events` leave the final "
                                "event out); `delivery_in_progress` (the event is still being "
                                "delivered: redeliver once its delivery has ended).",
                                schemas.error_example(
                                    409,
                                    "nothing_to_redeliver",
                                    "There is no final event to redeliver: the job has not "
                                    "finished, or it has no callback_url, ...",
                                ),
                            )
                        },
                    ),
                },
            )
        )
        class Fixed(self.target_class):  # type: ignore[name-defined]
            pass

        return Fixed


SECRET_EXAMPLE = OpenApiExample(
    "secret",
    value={"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
    response_only=True,
)


class SigningSecretApiScheme(OpenApiViewExtension):
    target_class = "webhooks.api.SigningSecretApi"
    optional = True

    def view_replacement(self) -> Any:
        from webhooks.api import SecretSerializer

        @extend_schema_view(
            get=extend_schema(
                operation_id="get_webhook_secret",
                summary="Get the webhook signing secret",
                description="This client's secret for verifying `webhook-signature` "
                "(created on first use). Keep it private; anyone with it can forge events.",
                tags=["Webhooks"],
                responses={
                    200: OpenApiResponse(
                        SecretSerializer, description="The secret.", examples=[SECRET_EXAMPLE]
                    ),
                    **error_responses(401),
                },
            )
        )
        class Fixed(self.target_class):  # type: ignore[name-defined]
            pass

        return Fixed


class SigningSecretRotateApiScheme(OpenApiViewExtension):
    target_class = "webhooks.api.SigningSecretRotateApi"
    optional = True

    def view_replacement(self) -> Any:
        from webhooks.api import SecretSerializer

        @extend_schema_view(
            post=extend_schema(
                operation_id="rotate_webhook_secret",
                summary="Rotate the webhook signing secret",
                description="Makes a new secret and answers it. For 24 hours (configurable) "
                "every delivery carries two signatures, one per secret, so a receiver can "
                "switch to the new secret without dropping an event.",
                tags=["Webhooks"],
                request=None,
                responses={
                    200: OpenApiResponse(
                        SecretSerializer, description="The new secret.", examples=[SECRET_EXAMPLE]
                    ),
                    **error_responses(401),
                },
            )
        )
        class Fixed(self.target_class):  # type: ignore[name-defined]
            pass

        return Fixed
