"""The registered webhook endpoints' operations and the client's delivery log (see
openapi.operations)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema

from openapi import schemas
from openapi.examples import DELIVERY_EXAMPLE, ENDPOINT_EXAMPLE, SECRET_EXAMPLE, page
from openapi.operations.webhooks import PAGE_400, ROTATE_400
from openapi.schemas import (
    CURSOR,
    DELIVERY_PAGE_SIZE,
    LIST_400,
    error_responses,
    example_response,
    query_parameter,
)
from webhooks.api import DeliverySerializer, SecretRotationSerializer, SecretSerializer
from webhooks.endpoint_api import (
    EndpointInputSerializer,
    EndpointSerializer,
    RecoverInputSerializer,
    RecoverOutputSerializer,
)
from webhooks.endpoints import NO_ENDPOINT
from webhooks.models import Delivery

ENDPOINT_ID = OpenApiParameter("endpoint_id", OpenApiTypes.UUID, OpenApiParameter.PATH)
TAGS = ["Webhook endpoints"]
# An endpoint's 404 says so, not the jobs' example.
_NO_ENDPOINT = {404: (schemas.NOT_FOUND, schemas.error_example(404, "not_found", NO_ENDPOINT))}


def _endpoint(status: int, description: str) -> dict[int, Any]:
    return {status: example_response(EndpointSerializer, description, "endpoint", ENDPOINT_EXAMPLE,
                                     status=str(status) if status != 200 else None)}


# What a registration or a change can get wrong, in place of the submissions' 400 and 409.
_REFUSED_HOST = (
    "The host example.invalid must resolve to public addresses only; it does not resolve, or "
    "resolves to an address that is not public."
)
_WRITE_400 = {
    400: (
        (
            "The request is invalid; nothing was changed. Codes: `invalid` (field errors in "
            "`details`), `invalid_url` (the URL is refused, as a `callback_url` would be: not "
            "http(s), or a host that does not resolve to public addresses; `details.url` says "
            "why), `malformed_json`, `invalid_json`, `json_too_deep`, `bad_request`."
        ),
        schemas.error_example(400, "invalid_url", f"url is not allowed: {_REFUSED_HOST}", {"url": [_REFUSED_HOST]}),
    )
}
# What a recovery can get wrong: its body, whose `since` is required.
_RECOVER_400 = {
    400: (
        (
            "The body is invalid; nothing was sent again. Codes: `invalid` (`since` missing or not a "
            "date-time, or a body that is not a JSON object; field errors in `details`), "
            "`malformed_json`, `invalid_json`, `json_too_deep`."
        ),
        schemas.error_example(400, "invalid", "The request is invalid; see details.",
                              {"since": ["This field is required."]}),
    )
}
_CREATE_409 = {
    409: (
        (
            "The client has `WEBHOOK_MAX_ENDPOINTS_PER_CLIENT` endpoints (20), the most it may "
            "(`details.max_endpoints`): delete one first. Code: `too_many_endpoints`."
        ),
        schemas.error_example(
            409, "too_many_endpoints", "You have 20 webhook endpoints, the most a client may have; delete one first.",
            {"max_endpoints": 20},
        ),
    )
}


OPERATIONS: dict[str, dict[str, Callable[..., Any]]] = {
    "webhooks.endpoint_api.EndpointListCreateApi": {
        "post": extend_schema(
            operation_id="create_webhook_endpoint",
            summary="Register a webhook endpoint",
            description="Register a URL once to receive the events it subscribes to from all "
            "your jobs (beside any job's own `callback_url`). Each endpoint has its own signing "
            "secret (`GET .../secret/`), at most 10 custom headers (each name once, in any case; not "
            "`webhook-*`, `content-*`, `host`, `expect` or hop-by-hop ones) and an optional pace (`rate_limit_per_second`: deliveries "
            "are spaced, never dropped). The URL passes the same address rules as a "
            "`callback_url`, here and at each attempt. At most `WEBHOOK_MAX_ENDPOINTS_PER_CLIENT` "
            "(20) per client: 409 `too_many_endpoints`.",
            tags=TAGS,
            request=EndpointInputSerializer,
            responses={**_endpoint(201, "Registered."),
                       **error_responses(400, 401, 408, 409, 413, 415, described={**_WRITE_400, **_CREATE_409})},
        ),
        "get": extend_schema(
            operation_id="list_webhook_endpoints",
            summary="List webhook endpoints",
            description="Your endpoints, newest first, each with its health.",
            tags=TAGS,
            parameters=[CURSOR, schemas.ENDPOINT_PAGE_SIZE],
            responses={
                200: example_response(schemas.EndpointPageSerializer, "A page of endpoints.", "page",
                                      page(ENDPOINT_EXAMPLE)),
                **error_responses(400, 401, described=PAGE_400),
            },
        ),
    },
    "webhooks.endpoint_api.EndpointDetailApi": {
        "get": extend_schema(
            operation_id="get_webhook_endpoint", summary="Get a webhook endpoint",
            description="The endpoint and its `health`: attempts that succeeded and failed in the last "
            "24 hours, the last of each, the failures in a row, and why it is disabled (`client`, "
            "or `failing`: every attempt failed for `WEBHOOK_ENDPOINT_DISABLE_AFTER_SECONDS`, 5 "
            "days, and at least 50 times).",
            tags=TAGS, parameters=[ENDPOINT_ID],
            responses={**_endpoint(200, "The endpoint."), **error_responses(401, 404, described=_NO_ENDPOINT)},
        ),
        "patch": extend_schema(
            operation_id="update_webhook_endpoint", summary="Change a webhook endpoint",
            description="Change any of the fields you set. `enabled: false` holds its pending "
            "deliveries (state `endpoint_disabled`); `enabled: true` sends them again, whether "
            "you or the service disabled it.",
            tags=TAGS, parameters=[ENDPOINT_ID], request=EndpointInputSerializer,
            responses={**_endpoint(200, "The endpoint, changed."),
                       **error_responses(400, 401, 404, 408, 413, 415, described={**_WRITE_400, **_NO_ENDPOINT})},
        ),
        "delete": extend_schema(
            operation_id="delete_webhook_endpoint", summary="Delete a webhook endpoint",
            description="Its deliveries not yet delivered stop (state `canceled`); the log stays.",
            tags=TAGS, parameters=[ENDPOINT_ID],
            responses={204: None, **error_responses(401, 404, described=_NO_ENDPOINT)},
        ),
    },
    "webhooks.endpoint_api.EndpointSecretApi": {
        "get": extend_schema(
            operation_id="get_webhook_endpoint_secret", summary="Get an endpoint's signing secret",
            description="The secret that signs this endpoint's deliveries (not your jobs' "
            "`callback_url` deliveries, which your client's secret signs).",
            tags=TAGS, parameters=[ENDPOINT_ID],
            responses={200: example_response(SecretSerializer, "The secret.", "secret", SECRET_EXAMPLE),
                       **error_responses(401, 404, described=_NO_ENDPOINT)},
        ),
    },
    "webhooks.endpoint_api.EndpointSecretRotateApi": {
        "post": extend_schema(
            operation_id="rotate_webhook_endpoint_secret", summary="Rotate an endpoint's signing secret",
            description="As `POST /api/webhook-secret/rotate/`, for this endpoint: the previous secret "
            "signs too for 24 h (never more than two), or stops at once with "
            "`{\"expire_previous_now\": true}`.",
            tags=TAGS, parameters=[ENDPOINT_ID], request=SecretRotationSerializer,
            responses={200: example_response(SecretSerializer, "The new secret.", "secret", SECRET_EXAMPLE),
                       **error_responses(400, 401, 404, 408, 413, 415, described={**ROTATE_400, **_NO_ENDPOINT})},
        ),
    },
    "webhooks.endpoint_api.EndpointTestApi": {
        "post": extend_schema(
            operation_id="test_webhook_endpoint", summary="Send a test event to an endpoint",
            description="Sends a `webhook.test` event to this endpoint now and answers with its delivery.",
            tags=TAGS, parameters=[ENDPOINT_ID], request=None,
            responses={202: example_response(DeliverySerializer, "The test event's delivery.", "delivery",
                                             {**DELIVERY_EXAMPLE, "event_type": "webhook.test", "state": "pending",
                                              "attempt_count": 0, "attempts": [], "finished_at": None},
                                             status="202"),
                       **error_responses(401, 404, described=_NO_ENDPOINT)},
        ),
    },
    "webhooks.endpoint_api.EndpointRecoverApi": {
        "post": extend_schema(
            operation_id="recover_webhook_endpoint", summary="Send an endpoint's failed deliveries again",
            description="Every delivery to this endpoint that failed for good (or is held while it "
            "was disabled) since `since` goes again, with its event's `webhook-id`: at most 1,000 a "
            "call, the newest first. While it answers 1,000, call it again: the next call sends the "
            "next ones, and none twice.",
            tags=TAGS, parameters=[ENDPOINT_ID], request=RecoverInputSerializer,
            responses={202: RecoverOutputSerializer,
                       **error_responses(400, 401, 404, 408, 413, 415, described={**_RECOVER_400, **_NO_ENDPOINT})},
        ),
    },
    "webhooks.endpoint_api.DeliveryListApi": {
        "get": extend_schema(
            operation_id="list_deliveries", summary="List your webhook deliveries",
            description="Every delivery of your events, to jobs' callback URLs and to your endpoints, "
            "newest first, each with its attempts.",
            tags=TAGS,
            parameters=[
                query_parameter("endpoint", OpenApiTypes.UUID, "Only to this endpoint."),
                query_parameter("job", OpenApiTypes.UUID, "Only of this job's events."),
                query_parameter("state", OpenApiTypes.STR, "Only in this state.",
                                enum=[choice for choice, _ in Delivery.State.choices]),
                query_parameter("event_type", OpenApiTypes.STR, "Only of this event type."),
                query_parameter("created_after", OpenApiTypes.DATETIME, "Only created at or after this time."),
                query_parameter("created_before", OpenApiTypes.DATETIME, "Only created before this time."),
                CURSOR, DELIVERY_PAGE_SIZE,
            ],
            responses={
                200: example_response(schemas.DeliveryPageSerializer, "A page of deliveries.", "page",
                                      page(DELIVERY_EXAMPLE)),
                **error_responses(400, 401, described=LIST_400),
            },
        ),
    },
}
