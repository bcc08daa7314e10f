"""The OpenAPI 3.1 `webhooks` section: every job event a callback URL receives.

Each event is a POST of `{"type", "timestamp", "data": <the job>}` signed with the Standard
Webhooks scheme; the three signature headers are added by `openapi.hooks` (drf-spectacular's
webhook support documents bodies and responses, not request headers).
"""
from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiExample, OpenApiResponse, OpenApiWebhook, extend_schema
from rest_framework import serializers

from jobs.serializers import JobSerializer
from openapi.examples import JOB_DONE_EXAMPLE, JOB_EXAMPLE

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
    """The body of every webhook request: these exact bytes are signed."""

    type = serializers.ChoiceField(choices=list(EVENTS), help_text="The event name.")
    timestamp = serializers.DateTimeField(help_text="When the event happened (ISO 8601, UTC).")
    data = JobSerializer(
        help_text="The job exactly as `GET /api/jobs/{job_id}/` showed it when the event happened."
    )


def _webhook(event: str) -> OpenApiWebhook:
    summary, when, job = EVENTS[event]
    return OpenApiWebhook(
        name=event,
        decorator=extend_schema(
            summary=summary,
            description=f"{when}\n\nA POST to the job's `callback_url` with a JSON body. "
            "Verify the `webhook-signature` before trusting it; deduplicate on `webhook-id` "
            "(retries and redeliveries of one event carry the same id). Answer any 2xx "
            "within 15 s to acknowledge; anything else is retried on a schedule (0 s, 5 s, "
            "5 min, 30 min, 2 h, 5 h, 10 h, 10 h by default), `410 Gone` stops retrying, and "
            "a `Retry-After` on 429 or 503 is honoured. Redirects are not followed.",
            tags=["Webhooks"],
            request=JobEventSerializer,
            examples=[
                OpenApiExample(
                    event,
                    value={"type": event, "timestamp": "2026-11-28T14:00:10.300000Z", "data": job},
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


WEBHOOKS = [_webhook(event) for event in EVENTS]
