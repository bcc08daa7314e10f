"""The OpenAPI 3.1 `webhooks` section: every event a callback URL or a registered endpoint
receives (the job events, and webhooks' own: `webhook.test`, `endpoint.disabled`).

Each event is a POST of `{"type", "timestamp", "data": <the job>}` signed with the Standard
Webhooks scheme; the three signature headers are added by `openapi.hooks` (drf-spectacular's
webhook support documents bodies and responses, not request headers).
"""
from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiExample, OpenApiResponse, OpenApiWebhook, extend_schema
from rest_framework import serializers

from jobs.serializers import JobSerializer
from openapi.examples import ENDPOINT_EXAMPLE, JOB_DONE_EXAMPLE, JOB_EXAMPLE
from webhooks.events import ENDPOINT_DISABLED_EVENT_TYPE, TEST_EVENT_TYPE

# name -> (summary, when it is sent, the job in the example)
EVENTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "job.started": (
        "A job started",
        "Sent when a worker picks the job up (`status` becomes `STARTED`). Opt-in via "
        "`webhook_events`.",
        {**JOB_EXAMPLE, "progress": None},
    ),
    "job.progress": (
        "A job reported progress",
        "Sent when a running job reports progress, at most about once a second per job. "
        "Opt-in via `webhook_events`.",
        JOB_EXAMPLE,
    ),
    "job.succeeded": (
        "A job succeeded",
        "Sent when the job ends with `SUCCESS`; `data.result` holds its result. Sent by default.",
        JOB_DONE_EXAMPLE,
    ),
    "job.failed": (
        "A job failed",
        "Sent when the job ends with `FAILURE` (an exception, a time limit, a lost worker); "
        "`data.error` says why. Sent by default.",
        {
            **JOB_DONE_EXAMPLE,
            "status": "FAILURE",
            "result": None,
            "error": {"type": "time_limit_exceeded", "message": "The job ran out of time."},
        },
    ),
    "job.canceled": (
        "A job was canceled",
        "Sent when the job ends with `REVOKED` after a cancel. Sent by default.",
        {**JOB_EXAMPLE, "status": "REVOKED", "finished_at": "2026-11-28T14:00:04.000000Z"},
    ),
}


class JobEventSerializer(serializers.Serializer):
    """The body of every job event's webhook request: these exact bytes are signed."""

    type = serializers.ChoiceField(choices=list(EVENTS), help_text="The event name.")
    timestamp = serializers.DateTimeField(help_text="When the event happened (ISO 8601, UTC).")
    data = JobSerializer(
        help_text="The job exactly as `GET /api/jobs/{job_id}/` showed it when the event happened."
    )


class TestEventDataSerializer(serializers.Serializer):
    endpoint_id = serializers.UUIDField()
    message = serializers.CharField()


class TestEventSerializer(serializers.Serializer):
    """The body of a `webhook.test` event (sent by `POST /api/webhook-endpoints/{id}/test/`)."""

    type = serializers.ChoiceField(choices=[TEST_EVENT_TYPE])
    timestamp = serializers.DateTimeField()
    data = TestEventDataSerializer()


class DisabledEndpointSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    url = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    event_types = serializers.ListField(child=serializers.CharField())
    enabled = serializers.BooleanField()
    disabled_reason = serializers.CharField(allow_null=True)
    disabled_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    reason = serializers.CharField(help_text="Why it was disabled, in a sentence.")


class EndpointDisabledEventSerializer(serializers.Serializer):
    """The body of an `endpoint.disabled` event: the endpoint the service disabled (no secret)."""

    type = serializers.ChoiceField(choices=[ENDPOINT_DISABLED_EVENT_TYPE])
    timestamp = serializers.DateTimeField()
    data = DisabledEndpointSerializer()


# webhooks' own events: name -> (summary, when, body serializer, the example's data)
OWN_EVENTS: dict[str, tuple[str, str, type[serializers.Serializer], dict[str, Any]]] = {
    TEST_EVENT_TYPE: (
        "A test event",
        "Sent to one registered endpoint when its client asks (`POST "
        "/api/webhook-endpoints/{id}/test/`), to check the receiver end to end.",
        TestEventSerializer,
        {"endpoint_id": ENDPOINT_EXAMPLE["id"], "message": "A test event, sent on request."},
    ),
    ENDPOINT_DISABLED_EVENT_TYPE: (
        "An endpoint was disabled",
        "Sent to a client's other endpoints that subscribe to it when the service disables one "
        "whose every attempt failed for `WEBHOOK_ENDPOINT_DISABLE_AFTER_SECONDS` (5 days) and at "
        "least 50 times. Its pending deliveries are held until its client enables it again.",
        EndpointDisabledEventSerializer,
        {**{k: v for k, v in ENDPOINT_EXAMPLE.items() if k not in ("headers", "rate_limit_per_second", "health")},
         "enabled": False, "disabled_reason": "failing", "disabled_at": "2026-12-03T13:00:02.000000Z",
         "reason": "Every attempt failed for 5 days (50 attempts or more)."},
    ),
}


def _webhook(event: str) -> OpenApiWebhook:
    if event in OWN_EVENTS:
        summary, when, body, data = OWN_EVENTS[event]
    else:
        summary, when, data = EVENTS[event]
        body = JobEventSerializer
    return OpenApiWebhook(
        name=event,
        decorator=extend_schema(
            summary=summary,
            description=f"{when}\n\nA POST to the job's `callback_url`, or to a registered endpoint "
            "that subscribes to it, with a JSON body. "
            "Verify the `webhook-signature` before trusting it; deduplicate on `webhook-id` "
            "(retries and redeliveries of one event carry the same id). Answer any 2xx "
            "within 15 s to acknowledge; anything else is retried on a schedule (0 s, 5 s, "
            "5 min, 30 min, 2 h, 5 h, 10 h, 10 h by default), `410 Gone` stops retrying, and "
            "a `Retry-After` on 429 or 503 is honoured. Redirects are not followed.",
            tags=["Webhooks"],
            request=body,
            examples=[
                OpenApiExample(
                    event,
                    value={"type": event, "timestamp": "2026-11-28T14:00:10.300000Z", "data": data},
                    # drf-spectacular builds a webhook's request body from the receiver's side
                    # (its "response" direction), so the body's examples are marked so.
                    response_only=True,
                )
            ],
            responses={
                200: OpenApiResponse(
                    description="Any 2xx acknowledges the event; the body is ignored."
                ),
                410: OpenApiResponse(description="Stop: this delivery is not retried."),
                429: OpenApiResponse(description="Retried, after `Retry-After` if given."),
                503: OpenApiResponse(description="Retried, after `Retry-After` if given."),
            },
        ),
    )


WEBHOOKS = [_webhook(event) for event in (*EVENTS, *OWN_EVENTS)]
