"""The webhook operations: deliveries, redelivery, the signing secret (see openapi.operations)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drf_spectacular.utils import extend_schema

from openapi import schemas
from openapi.examples import (
    DELIVERY_EXAMPLE,
    REDELIVERY_EXAMPLE,
    SECRET_EXAMPLE,
    page,
)
from openapi.schemas import (
    CURSOR,
    DELIVERY_PAGE_SIZE,
    JOB_ID,
    LIST_400,
    error_responses,
    example_response,
)
from webhooks.api import DeliverySerializer, SecretRotationSerializer, SecretSerializer

# A rotation's own 400s, in place of the submissions': only its optional body can be wrong.
# endpoints.py's endpoint rotation answers the same.
ROTATE_400 = {
    400: (
        (
            "The body is invalid; no secret was made. Codes: `invalid` (`expire_previous_now` not a "
            "boolean, or a body that is not a JSON object; field errors in `details`), `malformed_json`, "
            "`invalid_json`, `json_too_deep`."
        ),
        schemas.error_example(400, "invalid", "The request is invalid; see details.",
                              {"expire_previous_now": ["Must be a valid boolean."]}),
    )
}

# A list without filters (a job's deliveries; endpoints.py's endpoints): its cursor, its page size
# or a parameter it does not take can be wrong, not a filter's value as in LIST_400's lists.
PAGE_400 = {
    400: (
        (
            "The query is invalid. Codes: `invalid_cursor` (a cursor this list did not issue: altered, "
            "or from another list), `invalid_parameter` (`page_size` not a whole number of at least 1; a bad "
            "`cursor` too), `invalid_filter` (a parameter the list does not take, or one given twice: refused, never "
            "ignored; a bad `page_size` or `cursor` named too)."
        ),
        LIST_400[400][1],
    )
}

OPERATIONS: dict[str, dict[str, Callable[..., Any]]] = {
    "jobs.api.JobDeliveryListApi": {
        "get": extend_schema(
            operation_id="list_job_deliveries",
            summary="List a job's webhook deliveries",
            description="Every delivery of the job's events to its `callback_url`, newest "
            "first, each with all its attempts (status code, duration, the start of the "
            "response, or the network error). `state` is `pending` while attempts remain, "
            "then `succeeded` or `failed` (after the last retry). At most 100 deliveries a "
            "page: each carries up to one attempt per step of the retry schedule. A job "
            "pruned past `JOB_RETENTION_DAYS` still has the deliveries kept "
            "(`WEBHOOK_EVENT_RETENTION_DAYS`), as `GET /api/deliveries/?job=` lists them; 404 "
            "once neither the job nor any of them is left.",
            tags=["Webhooks"],
            parameters=[JOB_ID, CURSOR, DELIVERY_PAGE_SIZE],
            responses={
                200: example_response(
                    schemas.DeliveryPageSerializer,
                    "A page of deliveries.",
                    "page",
                    page(DELIVERY_EXAMPLE),
                ),
                **error_responses(400, 401, 404, described=PAGE_400),
            },
        ),
    },
    "jobs.api.JobRedeliverApi": {
        "post": extend_schema(
            operation_id="redeliver_job_event",
            summary="Redeliver a job's final event",
            description="Sends the job's final event (`job.succeeded`, `job.failed` or "
            "`job.canceled`) to its `callback_url` again, with the same body and the same "
            "`webhook-id`, for a receiver that lost it. Answers with the new delivery.",
            tags=["Webhooks"],
            parameters=[JOB_ID],
            request=None,
            responses={
                202: example_response(
                    DeliverySerializer,
                    "The redelivery is queued.",
                    "delivery",
                    REDELIVERY_EXAMPLE,
                ),
                **error_responses(
                    401,
                    404,
                    409,
                    described={
                        409: (
                            (
                                "Codes: `nothing_to_redeliver` (the job has not finished, has "
                                "no `callback_url`, its `webhook_events` leave the final "
                                "event out, or the event is past `WEBHOOK_EVENT_RETENTION_DAYS` "
                                "and was pruned); `delivery_in_progress` (the event is still being "
                                "delivered: redeliver once its delivery has ended)."
                            ),
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
        ),
    },
    "webhooks.api.SigningSecretApi": {
        "get": extend_schema(
            operation_id="get_webhook_secret",
            summary="Get the webhook signing secret",
            description="This client's secret for verifying `webhook-signature` "
            "(created on first use). Keep it private; anyone with it can forge events.",
            tags=["Webhooks"],
            responses={
                200: example_response(SecretSerializer, "The secret.", "secret", SECRET_EXAMPLE),
                **error_responses(401),
            },
        ),
    },
    "webhooks.api.SigningSecretRotateApi": {
        "post": extend_schema(
            operation_id="rotate_webhook_secret",
            summary="Rotate the webhook signing secret",
            description="Makes a new secret and answers it. For 24 hours (configurable) "
            "every delivery carries two signatures, one per secret, so a receiver can "
            "switch to the new secret without dropping an event. Never more than two: "
            "rotating again ends the previous secret's overlap at once. For a leaked secret, "
            "send `{\"expire_previous_now\": true}`: the previous secret stops signing now. "
            "The body is optional.",
            tags=["Webhooks"],
            request=SecretRotationSerializer,
            responses={
                200: example_response(
                    SecretSerializer, "The new secret.", "secret", SECRET_EXAMPLE
                ),
                **error_responses(400, 401, 408, 413, 415, 429, described=ROTATE_400),
            },
        ),
    },
}
