"""The buttons on a row's admin page (django-object-actions' change actions), offered only to a
staff user whom the action's own permissions let use it, as Django offers its list actions. The
library offers each to whoever may view the row: a user who may only view jobs saw Cancel, and
pressing it answered 403."""
from __future__ import annotations

from collections.abc import Sequence

from django.http import HttpRequest
from django_object_actions import DjangoObjectActions


class PermittedObjectActions(DjangoObjectActions):
    def get_change_actions(self, request: HttpRequest, object_id: str, form_url: str) -> Sequence[str]:
        return [
            name for name in super().get_change_actions(request, object_id, form_url)
            if all(getattr(self, f"has_{permission}_permission")(request)
                   for permission in getattr(getattr(self, name), "allowed_permissions", ()))
        ]
