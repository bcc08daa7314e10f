"""Admin for clients, their own limits among them, and their API keys (keys are created by
`manage.py create_api_key`); and Django's user admin, its password page remembering the browser
of a user who changes their own password (core/admin_login.py)."""
from collections.abc import Iterable
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.models import Group, User
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from core.admin_login import password_change_remembered
from core.admin_site import BoundedActionsAdmin, CountedDeletionAdmin
from core.limits import LIMIT_SETTINGS, limit_default
from core.models import ApiKey, Client
from core.services import api_key_delete, api_key_revoke, client_delete


@admin.register(Client)
class ClientAdmin(CountedDeletionAdmin, BoundedActionsAdmin):
    list_display = ("name", "id", "created_at")
    search_fields = ("name", "id")
    # The confirmation's names, and the refusal's (deletion_refused).
    deletion_listed_fields = ("id", "name")
    fieldsets = (
        (None, {"fields": ("name",)}),
        ("Limits", {
            "fields": tuple(LIMIT_SETTINGS),
            "description": "This client's own limits, in place of the settings every client shares. They "
            "apply within API_KEY_CACHE_SECONDS: each API process reads them with the client's API key.",
        }),
    )

    def formfield_for_dbfield(self, db_field: models.Field, request: HttpRequest, **kwargs: Any) -> forms.Field | None:
        formfield = super().formfield_for_dbfield(db_field, request, **kwargs)
        if formfield is not None and db_field.name in LIMIT_SETTINGS:
            # The setting's value in this process: what the client gets with the field empty.
            default = limit_default(db_field.name)  # type: ignore[arg-type]
            formfield.help_text = f"{formfield.help_text.removesuffix('.')}, now {default}."
        return formfield

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        client = self.get_object(request, unquote(object_id))
        if client is not None and self.has_delete_permission(request, client) and self.deletion_refused(request, [client]):
            return HttpResponseRedirect(reverse("admin:core_client_change", args=[client.pk]))
        return super().delete_view(request, object_id, extra_context)

    def deletion_refused(self, request: HttpRequest, rows: Iterable[Client]) -> bool:
        """Whether a client among `rows` has more than ADMIN_CLIENT_DELETE_MAX_JOBS jobs, each said
        in a message: its deletion (one transaction over all it owns, their keys read into the
        process) held an API process's memory as long as it ran, past a proxy's read timeout (a
        504, the operator not told whether it happened), however large the client."""
        bound = settings.ADMIN_CLIENT_DELETE_MAX_JOBS
        if not bound:
            return False
        refused = False
        for client in rows:
            # One job past the bound tells it, without counting all of a large client's.
            if client.jobs.order_by()[: bound + 1].count() > bound:
                self.message_user(
                    request,
                    f"The client “{client.name}” has more than {bound:,} jobs, too many to delete here "
                    f"within a request (ADMIN_CLIENT_DELETE_MAX_JOBS): nothing was deleted. Delete it on the "
                    f"server with: python manage.py client_delete {client.pk}",
                    messages.ERROR,
                )
                refused = True
        return refused

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


# Django's, registered by django.contrib.auth.admin (imported above, whatever the order of
# INSTALLED_APPS), replaced: their list actions bounded as every admin's of the project are.
admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(Group)
class GroupAdmin(BoundedActionsAdmin, DjangoGroupAdmin):
    pass


@admin.register(User)
class UserAdmin(BoundedActionsAdmin, DjangoUserAdmin):
    def user_change_password(self, request: HttpRequest, id: str, form_url: str = "") -> HttpResponse:
        # A staff user changing their own password here, as on /admin/password_change/, keeps a
        # device cookie (one of the new password) in this browser.
        return password_change_remembered(
            request, lambda: super(UserAdmin, self).user_change_password(request, id, form_url),
        )
