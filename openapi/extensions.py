"""drf-spectacular extensions: the auth scheme, the job's schemas, and one per view of the table.

The views stay plain DRF APIViews owned by their apps; `openapi.operations` says what each
operation takes and answers, and this module hands that to the schema generator. Loaded by
`openapi.urls`, once the app registry is ready.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drf_spectacular.extensions import (
    OpenApiAuthenticationExtension,
    OpenApiSerializerExtension,
    OpenApiViewExtension,
)
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.utils import extend_schema_view
from rest_framework.views import APIView

from jobs.models import WEBHOOK_EVENT_TYPES
from jobs.registry import job_types_all
from openapi import schemas
from openapi.operations import OPERATIONS
from webhooks.endpoint_api import EndpointHealthSerializer
from webhooks.events import ENDPOINT_EVENT_TYPES

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


def _variant_name(payload_title: str) -> str:
    return payload_title.removesuffix("Payload") + "JobSubmission"


def _register(registry: Any, name: str, schema: dict[str, Any]) -> dict[str, str]:
    """Adds `schema` as the component `name` (once) and answers a `$ref` to it."""
    component = ResolvedComponent(
        name=name, type=ResolvedComponent.SCHEMA, object=f"openapi:{name}", schema=schema
    )
    registry.register_on_missing(component)
    return component.ref


def _webhook_event_type(registry: Any) -> dict[str, str]:
    # One named enum, shared by the submission, the job and the webhook body (see `hooks`).
    return _register(
        registry, "WebhookEventType", {"type": "string", "enum": list(WEBHOOK_EVENT_TYPES)}
    )


def _scheduling_properties() -> dict[str, Any]:
    """What every submission may add: metadata, a time to run at, a deadline."""
    return {
        "metadata": {
            "type": "object",
            "additionalProperties": {"type": "string", "maxLength": 500},
            "maxProperties": 16,
            "propertyNames": {"minLength": 1, "maxLength": 40, "pattern": "^[^\\[\\]]+$"},
            "description": "Your own labels: up to 16 keys (1 to 40 characters, no square "
            "brackets) to string values (up to 500). Returned with the job and in its webhooks; "
            "filter the list with `metadata[<key>]=<value>`.",
        },
        "run_at": {
            "type": "string",
            "format": "date-time",
            "description": "Run no earlier than this (ISO 8601; at most 30 days ahead, "
            "`JOB_MAX_SCHEDULE_AHEAD_SECONDS`). The job stays `PENDING` until then, shown as "
            "`scheduled_for`, and can be canceled while it waits.",
        },
        "deadline": {
            "type": "string",
            "format": "date-time",
            "description": "Cancel the job if it is not final by then (ISO 8601, after `run_at`): "
            "it ends `REVOKED` with `error.type` `deadline_exceeded` (`aborted` if it never "
            "started). Or send the `Cancel-After` header instead.",
        },
    }


def _retry_policy(job_type: Any) -> dict[str, Any]:
    limits = job_type.retry_limits
    return {
        "type": "object",
        "properties": {
            "max_attempts": {"type": "integer", "minimum": 1, "maximum": limits.max_attempts},
            "backoff_seconds": {"type": "integer", "minimum": 0, "maximum": limits.max_backoff_seconds},
        },
        "required": ["max_attempts", "backoff_seconds"],
        "description": "Run the job again after a failure: up to `max_attempts` runs in all, "
        "each `backoff_seconds` after the failure before it; each retry shows as `RETRY` with "
        "its `attempt` and the last `error`.",
    }


class JobSubmissionScheme(OpenApiSerializerExtension):
    """`oneOf` the registered job types, discriminated by `job_name`; each with its payload."""

    target_class = schemas.JobSubmissionSerializer

    def get_name(self, auto_schema: Any, direction: Any) -> str:
        return "JobSubmission"

    def map_serializer(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        registry = auto_schema.registry
        variants: list[dict[str, str]] = []
        mapping: dict[str, str] = {}
        events = _webhook_event_type(registry)
        for job_type in job_types_all():
            payload = job_type.payload_model.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            # Nested models become components of their own, as the refs above expect.
            for def_name, def_schema in payload.pop("$defs", {}).items():
                _register(registry, def_name, def_schema)
            payload_ref = _register(registry, payload["title"], payload)
            needs_payload = bool(payload.get("required"))
            retry = {} if job_type.retry_limits is None else {"retry": _retry_policy(job_type)}
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
                    "webhook_endpoints": {
                        "type": "boolean",
                        "default": True,
                        "description": "Whether your registered webhook endpoints "
                        "(`/api/webhook-endpoints/`) get this job's events too; false: only its "
                        "own `callback_url` does.",
                    },
                    **_scheduling_properties(),
                    **retry,
                },
                "required": ["job_name", "payload"] if needs_payload else ["job_name"],
            }
            name = _variant_name(payload["title"])
            ref = _register(registry, name, variant)
            variants.append(ref)
            mapping[job_type.name] = ref["$ref"]
        return {
            "oneOf": variants,
            "discriminator": {"propertyName": "job_name", "mapping": mapping},
        }


_LEFT_OUT = " Null in a list when larger than API_LIST_INLINE_MAX_BYTES: see `omitted`."


class JobSerializerScheme(OpenApiSerializerExtension):
    """The job as stored: `webhook_events` is a JSON list on the model, typed here."""

    target_class = "jobs.serializers.JobSerializer"

    def map_serializer(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        # The base class's own mapping is drf-spectacular's default schema for the serializer.
        schema = super().map_serializer(auto_schema, direction)
        events = _webhook_event_type(auto_schema.registry)
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
            "The job's own failure (`{type, message}`), not an HTTP error: why it ended once "
            "`FAILURE`; its last run's while `RETRY` (and once `REVOKED` after that run); "
            "`deadline_exceeded` once `REVOKED` by its deadline; else null."
        )
        properties["progress"]["description"] = "Last progress report of a running job, or null."
        if "omitted" in properties:
            properties["payload"]["description"] += _LEFT_OUT
            properties["result"]["description"] += _LEFT_OUT
        # Empty when the job has no callback, which is not a URI: a plain string.
        properties["callback_url"] = {
            "type": "string",
            "readOnly": True,
            "description": "Where job events are sent; empty for none.",
        }
        return schema


class JobListItemSerializerScheme(JobSerializerScheme):
    """A job in a list: the same, and its `payload` and `result` may be left out."""

    target_class = "jobs.serializers.JobListItemSerializer"


class EndpointSerializerScheme(OpenApiSerializerExtension):
    """A webhook endpoint: its JSON fields and its health typed (the serializer computes them)."""

    target_class = "webhooks.endpoint_api.EndpointSerializer"

    def map_serializer(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        schema = super().map_serializer(auto_schema, direction)
        properties = schema["properties"]
        properties["event_types"] = {
            "type": "array", "readOnly": True, "description": "The event types it receives.",
            "items": {"type": "string", "enum": list(ENDPOINT_EVENT_TYPES)},
        }
        properties["headers"] = {
            "type": "object", "readOnly": True, "additionalProperties": {"type": "string"},
            "description": "Custom headers sent with every delivery.",
        }
        properties["disabled_reason"] = {
            "type": ["string", "null"], "enum": ["client", "failing", None], "readOnly": True,
            "description": "`client` (disabled through the API), `failing` (by the service), or null: enabled.",
        }
        health = auto_schema.resolve_serializer(EndpointHealthSerializer, direction)
        properties["health"] = health.ref
        return schema


# --- Views: one extension per entry of `openapi.operations.OPERATIONS` --------------------------

def view_extension(view: str, methods: dict[str, Callable[..., Any]]) -> type[OpenApiViewExtension]:
    """Registers (by subclassing) the extension giving `view`'s methods their schemas."""

    def view_replacement(self: OpenApiViewExtension) -> type[APIView]:
        # Annotate a subclass: the app's own view class stays as its app wrote it.
        fixed = type("Fixed", (self.target_class,), {})
        return extend_schema_view(**methods)(fixed)

    attributes: dict[str, Any] = {"target_class": view, "view_replacement": view_replacement}
    return type(f"{view.rsplit('.', 1)[-1]}Scheme", (OpenApiViewExtension,), attributes)


VIEW_EXTENSIONS = [view_extension(view, methods) for view, methods in OPERATIONS.items()]
