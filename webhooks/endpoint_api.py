"""Thin HTTP views for registered webhook endpoints (and the client's delivery log across jobs
and endpoints): parse, call webhooks/endpoints.py, serialize."""
from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import django_filters
from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.auth import client_writes
from core.errors import NotFound
from core.fields import JsonFloatField, TimestampField
from core.filters import NO_FILTERS, UtcIsoDateTimeFilter, query_filtered
from core.pagination import NewestFirstCursorPagination
from webhooks import endpoints, secrets, selectors, shapes
from webhooks.api import (
    DeliveryPagination,
    DeliverySerializer,
    SecretRotationSerializer,
    SecretSerializer,
)
from webhooks.events import ENDPOINT_EVENT_TYPES
from webhooks.models import Delivery, Endpoint

MAX_HEADERS = 10
MAX_HEADER_VALUE_CHARS = 1000
# RFC 9110's token: what a header's name may be made of.
_HEADER_NAME = re.compile(r"\A[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}\Z")
# Names the service sets, or that would change how the request travels: never the client's.
_RESERVED_HEADERS = frozenset({
    "host", "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "trailers", "transfer-encoding", "upgrade", "user-agent", "accept-encoding",
    # The HTTP client sends the body at once, whatever it says: a receiver that honours it would
    # answer 100 Continue (or 417) to a request that never waited.
    "expect",
})
_RESERVED_PREFIXES = ("webhook-", "content-")


class HeadersField(serializers.DictField):
    child = serializers.CharField(max_length=MAX_HEADER_VALUE_CHARS, allow_blank=True, trim_whitespace=False)

    def to_internal_value(self, data: Any) -> dict[str, str]:
        if isinstance(data, dict) and not all(isinstance(value, str) for value in data.values()):
            raise serializers.ValidationError("Header values are strings.")
        # Counted before each is checked: a 1 MiB body holds 55,000 of them (243 ms of checks).
        if isinstance(data, dict) and len(data) > MAX_HEADERS:
            raise serializers.ValidationError(f"At most {MAX_HEADERS} headers.")
        headers = super().to_internal_value(data)
        # Names are case-insensitive: of X-Team and x-team only one went, though both were shown.
        if len({name.lower() for name in headers}) < len(headers):
            raise serializers.ValidationError("A header is named twice (names are case-insensitive).")
        for name, value in headers.items():
            lowered = name.lower()
            if not _HEADER_NAME.match(name):
                raise serializers.ValidationError(f"{name[:100]!r} is not a header name.")
            if lowered in _RESERVED_HEADERS or lowered.startswith(_RESERVED_PREFIXES):
                raise serializers.ValidationError(
                    f"{name} is set by the service (webhook-*, content-*, host, hop-by-hop headers)."
                )
            if any(ord(char) < 0x20 and char != "\t" or ord(char) == 0x7F for char in value):
                raise serializers.ValidationError(f"The value of {name} has control characters.")
            if not value.isascii():  # HTTP/1.1 sends header values as bytes; only ASCII is portable
                raise serializers.ValidationError(f"The value of {name} is not ASCII.")
            if value[:1] in (" ", "\t"):  # the HTTP client refuses such a value at every send
                raise serializers.ValidationError(f"The value of {name} starts with whitespace.")
        return headers


class EndpointInputSerializer(serializers.Serializer):
    url = serializers.CharField(max_length=2000, help_text="Where the events are POSTed (http or https).")
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=ENDPOINT_EVENT_TYPES), allow_empty=False,
        max_length=len(ENDPOINT_EVENT_TYPES), required=False,
        help_text="What it receives; default the three final job events.",
    )
    description = serializers.CharField(max_length=500, allow_blank=True, required=False)
    enabled = serializers.BooleanField(required=False)
    headers = HeadersField(required=False, help_text=f"Up to {MAX_HEADERS} headers sent with every delivery.")
    rate_limit_per_second = JsonFloatField(
        min_value=0.01, max_value=1000, allow_null=True, required=False,
        help_text="At most this many deliveries a second: they are spaced, never dropped. Null: no pace.",
    )


class EndpointHealthSerializer(serializers.Serializer):
    succeeded_24h = serializers.IntegerField(
        help_text="Attempts started in the last 24 hours (up to this response) that got a 2xx."
    )
    failed_24h = serializers.IntegerField(
        help_text="Attempts started in the last 24 hours that failed: any other status, a network error or "
                  "timeout, or interrupted (its worker stopped). An attempt under way is counted once it ends; one "
                  "failed by an internal error of the service (its error begins `Internal error while`) is not "
                  "counted, here or toward disabling the endpoint."
    )
    last_success_at = serializers.DateTimeField(allow_null=True)
    last_failure_at = serializers.DateTimeField(allow_null=True)
    consecutive_failures = serializers.IntegerField()
    disabled_reason = serializers.CharField(
        allow_null=True, help_text="`client` (disabled through the API), `failing` (by the service), or null."
    )


class EndpointSerializer(serializers.ModelSerializer):
    disabled_reason = serializers.SerializerMethodField()
    disabled_at = serializers.DateTimeField(
        read_only=True, allow_null=True,
        help_text="When it was disabled, by its client or the service; null while enabled (or, for an endpoint "
                  "its client disabled before this was recorded, not known).",
    )
    next_slot_at = serializers.SerializerMethodField(
        help_text="Under its pace, when a delivery recorded now would go: its deliveries waiting for their slots "
                  "reach this far (about (next_slot_at - now) x rate_limit_per_second of them). Null without a pace "
                  "or when none waits. Soon after a change of its pace or of enabled, while they are rescheduled, "
                  "it shows those rescheduled so far.",
    )
    health = serializers.SerializerMethodField()

    class Meta:
        model = Endpoint
        fields = ["id", "url", "description", "event_types", "enabled", "disabled_reason", "disabled_at", "headers",
                  "rate_limit_per_second", "next_slot_at", "created_at", "health"]
        read_only_fields = fields

    def to_representation(self, endpoint: Endpoint) -> dict[str, Any]:
        shown = super().to_representation(endpoint)
        # A row's JSON as the API documents it, whatever it holds (webhooks/shapes.py).
        shown["event_types"] = shapes.event_types_shown(endpoint.event_types)
        shown["headers"] = shapes.headers_shown(endpoint.headers)
        return shown

    def get_disabled_reason(self, endpoint: Endpoint) -> str | None:
        return endpoint.disabled_reason or None

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_next_slot_at(self, endpoint: Endpoint) -> str | None:
        slot = endpoint.next_slot_at
        if not endpoint.rate_limit_per_second or slot is None or slot <= timezone.now():
            return None
        return str(serializers.DateTimeField().to_representation(slot))

    def get_health(self, endpoint: Endpoint) -> dict[str, Any]:
        counts: dict[Any, tuple[int, int]] = self.context.get("counts") or selectors.endpoint_attempt_counts(
            endpoint_ids=[endpoint.id], since=timezone.now() - timedelta(hours=24)
        )
        succeeded, failed = counts.get(endpoint.id, (0, 0))
        return EndpointHealthSerializer({
            "succeeded_24h": succeeded, "failed_24h": failed, "last_success_at": endpoint.last_success_at,
            "last_failure_at": endpoint.last_failure_at, "consecutive_failures": endpoint.consecutive_failures,
            "disabled_reason": endpoint.disabled_reason or None,
        }).data


class EndpointPagination(NewestFirstCursorPagination):
    max_page_size = 100


class EndpointListCreateApi(APIView):
    def get(self, request: Request) -> Response:
        # No filters: a parameter it does not take is refused all the same (a misspelt cursor).
        owned = selectors.endpoints_of_owner(owner_id=request.user.pk)
        owned = query_filtered(NO_FILTERS, request, owned, pagination=EndpointPagination)
        paginator = EndpointPagination()
        page = paginator.paginate_queryset(owned, request, view=self)
        counts = selectors.endpoint_attempt_counts(
            endpoint_ids=[e.id for e in page], since=timezone.now() - timedelta(hours=24)
        )
        return paginator.get_paginated_response(EndpointSerializer(page, many=True, context={"counts": counts}).data)

    def post(self, request: Request) -> Response:
        data = EndpointInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        with client_writes(request):
            endpoint = endpoints.endpoint_create(owner_id=request.user.pk, **data.validated_data)
        return Response(EndpointSerializer(endpoint).data, status=status.HTTP_201_CREATED,
                        headers={"Location": f"/api/webhook-endpoints/{endpoint.id}/"})


class EndpointDetailApi(APIView):
    def get(self, request: Request, endpoint_id: str) -> Response:
        endpoint = endpoints.endpoint_get(owner_id=request.user.pk, endpoint_id=endpoint_id)
        return Response(EndpointSerializer(endpoint).data)

    def patch(self, request: Request, endpoint_id: str) -> Response:
        endpoints.endpoint_get(owner_id=request.user.pk, endpoint_id=endpoint_id)  # 404 before 400
        data = EndpointInputSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        endpoint = endpoints.endpoint_update(owner_id=request.user.pk, endpoint_id=endpoint_id, **data.validated_data)
        return Response(EndpointSerializer(endpoint).data)

    def delete(self, request: Request, endpoint_id: str) -> Response:
        endpoints.endpoint_delete(owner_id=request.user.pk, endpoint_id=endpoint_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class EndpointSecretApi(APIView):
    def get(self, request: Request, endpoint_id: str) -> Response:
        endpoint = endpoints.endpoint_get(owner_id=request.user.pk, endpoint_id=endpoint_id)
        try:  # made on first use
            secret = secrets.signing_secret_get_or_create(owner_id=request.user.pk, endpoint_id=endpoint.id)
        except secrets.SecretOwnerGone:  # deleted since it was looked up
            raise NotFound(endpoints.NO_ENDPOINT) from None
        return Response(SecretSerializer({"secret": secret}).data)


class EndpointSecretRotateApi(APIView):
    throttle_scopes = {"POST": "sensitive"}

    def post(self, request: Request, endpoint_id: str) -> Response:
        endpoint = endpoints.endpoint_get(owner_id=request.user.pk, endpoint_id=endpoint_id)
        data = SecretRotationSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            secret = secrets.signing_secret_rotate(
                owner_id=request.user.pk, endpoint_id=endpoint.id,
                expire_previous_now=data.validated_data["expire_previous_now"],
            )
        except secrets.SecretOwnerGone:  # deleted since it was looked up
            raise NotFound(endpoints.NO_ENDPOINT) from None
        return Response(SecretSerializer({"secret": secret}).data)


class EndpointTestApi(APIView):
    throttle_scopes = {"POST": "sensitive"}

    def post(self, request: Request, endpoint_id: str) -> Response:
        delivery = endpoints.endpoint_test(owner_id=request.user.pk, endpoint_id=endpoint_id)
        return Response(DeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)


class RecoverInputSerializer(serializers.Serializer):
    since = TimestampField(help_text="Send again what failed (or was held) from this time on.")


class RecoverOutputSerializer(serializers.Serializer):
    recovered = serializers.IntegerField(help_text=(
        "How many deliveries go again. On a disabled endpoint, the failures sent again, which wait "
        "with its held deliveries until it is enabled; the held ones are not counted."
    ))


class EndpointRecoverApi(APIView):
    throttle_scopes = {"POST": "sensitive"}

    def post(self, request: Request, endpoint_id: str) -> Response:
        endpoints.endpoint_get(owner_id=request.user.pk, endpoint_id=endpoint_id)
        data = RecoverInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        count = endpoints.endpoint_recover(owner_id=request.user.pk, endpoint_id=endpoint_id,
                                           since=data.validated_data["since"])
        return Response(RecoverOutputSerializer({"recovered": count}).data, status=status.HTTP_202_ACCEPTED)


class DeliveryFilter(django_filters.FilterSet):
    endpoint = django_filters.UUIDFilter(method="filter_endpoint")
    job = django_filters.UUIDFilter(field_name="subject_id")
    state = django_filters.ChoiceFilter(choices=Delivery.State.choices)
    # The delivery's own copy of its event's type: delivery_owner_type_created (webhooks/models.py).
    event_type = django_filters.CharFilter()
    created_after = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Delivery
        fields = ["endpoint", "job", "state", "event_type", "created_after", "created_before"]

    def filter_endpoint(self, queryset: QuerySet[Delivery], name: str, value: uuid.UUID) -> QuerySet[Delivery]:
        """The deliveries of one of the asker's endpoints; for an id of none of its endpoints, none,
        and none read. Filtered on `endpoint_id` alone, PostgreSQL walked every delivery of that
        endpoint (delivery_endpoint_created) to find none of the asker's: another client's
        endpoint's id cost the asker's request as many reads as that client had deliveries."""
        if not Endpoint.objects.filter(pk=value, owner_id=self.request.user.pk).exists():
            return queryset.none()
        return queryset.filter(endpoint_id=value)


class DeliveryListApi(APIView):
    """`GET /api/deliveries/`: the client's deliveries across jobs and endpoints, with attempts."""

    def get(self, request: Request) -> Response:
        deliveries = selectors.deliveries_of_owner(owner_id=request.user.pk)
        deliveries = query_filtered(DeliveryFilter, request, deliveries, pagination=DeliveryPagination)
        paginator = DeliveryPagination()
        page = paginator.paginate_queryset(deliveries, request, view=self)
        return paginator.get_paginated_response(DeliverySerializer(page, many=True).data)
