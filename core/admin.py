"""Admin for clients, their own limits among them, and their API keys (keys are created by
`manage.py create_api_key`)."""
from collections.abc import Sequence
from typing import Any

from django import forms
from django.contrib import admin
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.text import capfirst

from core.admin_site import BoundedActionsAdmin
from core.limits import LIMIT_SETTINGS, limit_default
from core.models import ApiKey, Client
from core.services import api_key_delete, api_key_revoke, client_delete


@admin.register(Client)
class ClientAdmin(BoundedActionsAdmin):
    list_display = ("name", "id", "created_at")
    search_fields = ("name", "id")
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

    def get_deleted_objects(
        self, objs: Sequence[Client], request: HttpRequest
    ) -> tuple[list[str], dict[str, int], set[str], list[Any]]:
        """What the deletion's confirmation shows and checks: the clients, how many rows of each
        kind they own (which go with them; a delivery's attempts with it), and the kinds the user
        may not delete. Counted, not read: Django's own reads and links every row, and its
        confirming POST reads them all again before deleting, so a client with a year of jobs
        (a million jobs, their events and results) made a page of hundreds of megabytes past any
        request timeout, and could not be deleted at all."""
        clients = list(objs)
        counts = {str(Client._meta.verbose_name_plural): len(clients)}
        lacking: set[str] = set()
        # Every relation to a client, those without a reverse name ("+") too: what its
        # deletion cascades to.
        for relation in Client._meta.get_fields(include_hidden=True):
            if not (relation.auto_created and not relation.concrete and relation.on_delete is models.CASCADE):
                continue
            model = relation.related_model
            count = model._default_manager.filter(**{f"{relation.field.name}__in": clients}).count()
            if not count:
                continue
            counts[str(model._meta.verbose_name_plural)] = count
            if self.admin_site.is_registered(model) and not (
                self.admin_site.get_model_admin(model).has_delete_permission(request)
            ):
                lacking.add(str(model._meta.verbose_name))
        return [f"{capfirst(Client._meta.verbose_name)}: {client}" for client in clients], counts, lacking, []

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
