"""Admin for the delivery log (read-only: attempts are facts; a delivery can be sent again),
registered endpoints (their health; disable and enable) and signing secrets."""
from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django_object_actions import action, takes_instance_or_queryset

from core.admin_object_actions import PermittedObjectActions
from core.admin_site import (
    BoundedActionsAdmin,
    LargeTableAdmin,
    action_apply,
    known_values_filter,
)
from webhooks import shapes
from webhooks.endpoints import endpoint_delete, endpoint_update
from webhooks.events import ENDPOINT_EVENT_TYPES
from webhooks.models import Delivery, DeliveryAttempt, Endpoint, Event, SigningSecret
from webhooks.outbox import delivery_redeliver
from webhooks.selectors import deliveries_failing_to_host


class ReadOnlyAdmin(BoundedActionsAdmin):
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    fields = ["number", "url", "started_at", "duration_ms", "status_code", "error", "response_body"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class FailingToHostFilter(admin.SimpleListFilter):
    """`?failing_host=<host>`: the failing deliveries of the callback URLs on a host, which the
    console's failing receivers link to. Offers no hosts of its own (there are as many as the
    clients' callbacks): the list's sidebar shows it, with its host, once a link set it."""

    title = "failing to host"
    parameter_name = "failing_host"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        host = self.value()
        return [(host, host)] if host else []

    def queryset(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> QuerySet[Delivery]:
        host = self.value()
        if not host:
            return queryset
        return queryset & deliveries_failing_to_host(now=timezone.now(), host=host)


@admin.register(Delivery)
class DeliveryAdmin(PermittedObjectActions, ReadOnlyAdmin, LargeTableAdmin):
    list_display = ["id", "subject_id", "event", "url", "state", "attempt_count", "next_attempt_at", "created_at"]
    list_filter = ["state", "redelivery", FailingToHostFilter]
    search_fields = ["subject_id", "event__message_id", "url"]
    uuid_search_fields = ("subject_id",)
    list_select_related = ["event"]
    list_deferred = ("event__body",)
    inlines = [DeliveryAttemptInline]
    actions = ["redeliver"]
    change_actions = ["redeliver"]
    # Its deletion counts its attempts rather than read each one whole (core/admin_site.py).
    deletion_listed_fields = ("id", "event", "state")

    def has_redeliver_permission(self, request: HttpRequest) -> bool:
        # A new delivery, never a change to this one's log: the permission to change deliveries.
        return request.user.has_perm("webhooks.change_delivery")

    @action(label="Redeliver", description="Send the event again (same bytes, same webhook-id)",
            permissions=["redeliver"], methods=("POST",), button_type="form")
    @takes_instance_or_queryset
    def redeliver(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        """As the client's redeliver (webhooks.outbox.delivery_redeliver), for each delivery's event,
        to the delivery's URL; an endpoint's delivery is refused (the endpoint's recover sends it)."""
        if not self.has_redeliver_permission(request):
            raise PermissionDenied
        action_apply(
            self, request, queryset.select_related("event"),
            lambda delivery: delivery_redeliver(owner_id=delivery.owner_id, subject_id=delivery.subject_id,
                                                event_types=[delivery.event.event_type],
                                                callback_url="" if delivery.endpoint_id else delivery.url),
            done="Redelivering {count} event(s).",
            refused="{count} event(s) left as they were: still being delivered (try once they end), or sent to "
                    "an endpoint (its recover sends them again).",
            logged="Redelivered its event (admin action).",
        )


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin, LargeTableAdmin):
    list_display = ["message_id", "event_type", "subject_id", "owner", "created_at"]
    # The event types the code knows, not the table's distinct ones (core/admin_site.py).
    list_filter = [known_values_filter("event_type", "event type", lambda: list(ENDPOINT_EVENT_TYPES))]
    search_fields = ["message_id", "subject_id"]
    uuid_search_fields = ("subject_id",)
    list_deferred = ("body",)
    exclude = ["body"]
    readonly_fields = ["body_text"]
    # Its deletion counts its deliveries rather than read each one joined to its event, the body
    # again for each (core/admin_site.py).
    deletion_listed_fields = ("id", "event_type", "message_id")

    @admin.display(description="body")
    def body_text(self, obj: Event) -> str:
        return bytes(obj.body).decode("utf-8", errors="replace")


@admin.register(SigningSecret)
class SigningSecretAdmin(ReadOnlyAdmin):
    list_display = ["owner", "created_at", "expires_at"]
    # The secret itself is never shown: the client reads it from the API with its key.
    exclude = ["secret"]


@admin.register(Endpoint)
class EndpointAdmin(PermittedObjectActions, ReadOnlyAdmin):
    """Endpoints with their health; disabling and enabling go through the client's own service
    (webhooks.endpoints.endpoint_update), which holds and resumes their deliveries, and so does
    deleting (webhooks.endpoints.endpoint_delete), which cancels them."""

    list_display = ["id", "owner", "url", "enabled", "disabled_reason", "consecutive_failures",
                    "last_success_at", "last_failure_at", "last_error"]
    list_filter = ["enabled", "disabled_reason"]
    search_fields = ["id", "url", "owner__name"]
    list_select_related = ["owner"]
    actions = ["disable", "enable"]
    change_actions = ["disable", "enable"]
    # A receiver often authenticates the sender by a custom header: its value is a secret, like
    # the signing secret, and the client reads it from the API with its key.
    exclude = ["headers"]
    readonly_fields = ["header_names"]

    @admin.display(description="headers")
    def header_names(self, obj: Endpoint) -> str:
        return ", ".join(sorted(shapes.headers_shown(obj.headers))) or "-"

    # Deletions go through the client's own service, which cancels the endpoint's deliveries not
    # yet delivered. Django's own left them pending (or held) without their endpoint: sent to its
    # URL signed with the client's own secret, which the receiver does not know (or held for ever,
    # their events kept past the retention).
    def delete_model(self, request: HttpRequest, obj: Endpoint) -> None:
        endpoint_delete(owner_id=obj.owner_id, endpoint_id=obj.pk)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        for endpoint in queryset:
            endpoint_delete(owner_id=endpoint.owner_id, endpoint_id=endpoint.pk)

    def has_disable_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("webhooks.change_endpoint")

    has_enable_permission = has_disable_permission

    def _set_enabled(self, request: HttpRequest, queryset: QuerySet[Endpoint], enabled: bool) -> None:
        if not self.has_disable_permission(request):
            raise PermissionDenied
        action_apply(
            self, request, queryset,
            lambda endpoint: endpoint_update(owner_id=endpoint.owner_id, endpoint_id=endpoint.pk, enabled=enabled),
            done=f"{'Enabled' if enabled else 'Disabled'} {{count}} endpoint(s).", refused="{count} endpoint(s) left as they were.",
            logged=f"{'Enabled' if enabled else 'Disabled'} (admin action).",
        )

    @action(label="Disable", description="Stop sending; hold its pending deliveries",
            permissions=["disable"], methods=("POST",), button_type="form")
    @takes_instance_or_queryset
    def disable(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        self._set_enabled(request, queryset, False)

    @action(label="Enable", description="Send again, its held deliveries first",
            permissions=["enable"], methods=("POST",), button_type="form")
    @takes_instance_or_queryset
    def enable(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        self._set_enabled(request, queryset, True)
