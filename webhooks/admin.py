"""Admin for the delivery log (read-only: attempts are facts) and signing secrets."""
from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from webhooks.models import Delivery, DeliveryAttempt, Event, SigningSecret


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    fields = ["number", "started_at", "duration_ms", "status_code", "error", "response_body"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = ["id", "subject_id", "event", "state", "attempt_count", "next_attempt_at", "created_at"]
    list_filter = ["state", "redelivery"]
    search_fields = ["subject_id", "event__message_id", "url"]
    list_select_related = ["event"]
    inlines = [DeliveryAttemptInline]


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ["message_id", "event_type", "subject_id", "owner", "created_at"]
    list_filter = ["event_type"]
    search_fields = ["message_id", "subject_id"]
    exclude = ["body"]
    readonly_fields = ["body_text"]

    @admin.display(description="body")
    def body_text(self, obj: Event) -> str:
        return bytes(obj.body).decode("utf-8", errors="replace")


@admin.register(SigningSecret)
class SigningSecretAdmin(ReadOnlyAdmin):
    list_display = ["owner", "created_at", "expires_at"]
    # The secret itself is never shown: the client reads it from the API with its key.
    exclude = ["secret"]
