"""Thin HTTP views for the client's signing secret, and the delivery log's representation."""
from __future__ import annotations

from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.auth import client_writes
from core.pagination import NewestFirstCursorPagination
from webhooks import secrets
from webhooks.models import Delivery, DeliveryAttempt


class SecretSerializer(serializers.Serializer):
    secret = serializers.CharField(help_text='The signing secret, "whsec_" + base64 of 32 bytes.')


class DeliveryAttemptSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField(
        help_text="The URL this attempt was sent to: an endpoint's URL when the attempt was made."
    )

    class Meta:
        model = DeliveryAttempt
        fields = ["number", "url", "started_at", "duration_ms", "status_code", "response_body", "error"]
        read_only_fields = fields

    def get_url(self, attempt: DeliveryAttempt) -> str:
        # An attempt opened before it kept its URL (migration webhooks 0013) went to its
        # delivery's. The delivery is the one the attempts were read through: no query.
        return attempt.url or attempt.delivery.url


class DeliverySerializer(serializers.ModelSerializer):
    url = serializers.CharField(
        read_only=True,
        help_text="Where the delivery was addressed when it was recorded. An endpoint's delivery goes to the "
                  "endpoint's URL of the moment at each attempt: see each attempt's `url`.",
    )
    webhook_id = serializers.CharField(source="event.message_id", read_only=True)
    event_type = serializers.CharField(source="event.event_type", read_only=True)
    attempts = DeliveryAttemptSerializer(many=True, read_only=True)

    class Meta:
        model = Delivery
        fields = [
            "id",
            "webhook_id",
            "event_type",
            "endpoint",
            "url",
            "state",
            "redelivery",
            "attempt_count",
            "next_attempt_at",
            "created_at",
            "finished_at",
            "attempts",
        ]
        read_only_fields = fields


class DeliveryPagination(NewestFirstCursorPagination):
    """A delivery carries up to len(WEBHOOK_RETRY_SCHEDULE) attempts, each with up to 4 KiB of
    the receiver's answer: 100 a page keeps a page under 4 MiB with the default schedule of 8
    (docs/api.md, "Bounded lists")."""

    max_page_size = 100


class SigningSecretApi(APIView):
    def get(self, request: Request) -> Response:
        with client_writes(request):  # made on first use
            secret = secrets.signing_secret_get_or_create(owner_id=request.user.pk)
        return Response(SecretSerializer({"secret": secret}).data)


class SecretRotationSerializer(serializers.Serializer):
    expire_previous_now = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Stop the previous secret signing at once (it leaked), instead of after the overlap.",
    )


class SigningSecretRotateApi(APIView):
    throttle_scopes = {"POST": "sensitive"}

    def post(self, request: Request) -> Response:
        data = SecretRotationSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        with client_writes(request):
            secret = secrets.signing_secret_rotate(
                owner_id=request.user.pk, expire_previous_now=data.validated_data["expire_previous_now"]
            )
        return Response(SecretSerializer({"secret": secret}).data, status=status.HTTP_200_OK)
