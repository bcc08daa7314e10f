"""Admin for clients and their API keys (keys are created by `manage.py create_api_key`)."""
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from core.admin_site import BoundedActionsAdmin
from core.models import ApiKey, Client
from core.services import api_key_delete, api_key_revoke, client_delete


@admin.register(Client)
class ClientAdmin(BoundedActionsAdmin):
    list_display = ("name", "id", "created_at")
    search_fields = ("name", "id")

    # Deletions go through the services, which forget the deleted keys this process remembers.
    def delete_model(self, request: HttpRequest, obj: Client) -> None:
        client_delete(client=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Client]) -> None:
        for client in queryset:
            client_delete(client=client)


@admin.register(ApiKey)
class ApiKeyAdmin(BoundedActionsAdmin):
    list_display = ("prefix", "client", "created_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("prefix", "client__name")
    readonly_fields = ("client", "digest", "prefix", "created_at", "revoked_at")
    actions = ("revoke",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a key must be shown once to its owner: use the management command

    def delete_model(self, request: HttpRequest, obj: ApiKey) -> None:
        api_key_delete(api_key=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for api_key in queryset:
            api_key_delete(api_key=api_key)

    # Changing permission: without `permissions` Django offers an action to whoever may view the
    # list, so a staff user allowed to view keys could revoke every client's.
    @admin.action(description="Revoke the selected keys", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for api_key in queryset:
            api_key_revoke(api_key=api_key)
