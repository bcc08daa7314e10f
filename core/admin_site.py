"""The admin site: Django's, with its failed logins limited per client address; its list
actions bounded in rows; and how they apply a service to each selected row."""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from core.errors import Conflict, database_unreachable, storage_full
from core.ratelimit import ceiling_seconds
from core.throttling import AdminLoginRateThrottle


class AdminSite(admin.AdminSite):
    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        throttle = AdminLoginRateThrottle()
        if not throttle.allow_request(request, None):
            wait = ceiling_seconds(throttle.wait() or 0)
            response = HttpResponse(
                f"Too many login attempts from your address; try again in {wait} s.",
                status=429,
                content_type="text/plain; charset=utf-8",
            )
            response["Retry-After"] = str(wait)
            return response
        try:
            response = super().login(request, extra_context)
        except Exception as exc:
            # Answered 503 (core/middleware.py OutageMiddleware) for the service's outage, not a
            # wrong password: with the database out of reach the user's row could not be read to
            # check one, and a full disk fails only a write, which only a right password makes (the
            # session it opens). Counted, an operator retrying through an outage would find the
            # admin locked once it is over.
            if database_unreachable(exc) or storage_full(exc):
                throttle.give_back()
            raise
        # A POST is answered with a redirect only once it logged someone in (a failure shows the
        # form again): that attempt does not count.
        if request.method == "POST" and response.status_code == 302:
            throttle.give_back()
        return response


ActionFunction = Callable[[admin.ModelAdmin, HttpRequest, QuerySet[Any]], HttpResponse | None]


class BoundedActionsAdmin(admin.ModelAdmin):
    """A model's admin whose list actions, Django's delete_selected among them, refuse a selection
    of more than ADMIN_ACTION_MAX_ROWS rows: "select all" across the pages of a month of jobs would
    otherwise have one request load and act on every one of them, holding an API process and the
    database for minutes. Every model admin of the project is one."""

    def get_actions(self, request: HttpRequest) -> dict[str, tuple[ActionFunction, str, str]]:
        return {name: (_bounded(func), name, description)
                for name, (func, _, description) in super().get_actions(request).items()}


def _bounded(action: ActionFunction) -> ActionFunction:
    @functools.wraps(action)  # keeps what Django reads on it (permissions, description)
    def bounded(model_admin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse | None:
        bound = settings.ADMIN_ACTION_MAX_ROWS
        if not bound:
            return action(model_admin, request, queryset)
        # One key past the bound tells a selection too large, without counting all of it; in no
        # order, so that the database stops at that key rather than sort the whole selection.
        keys = list(queryset.order_by().values_list("pk", flat=True)[: bound + 1])
        if len(keys) > bound:
            model_admin.message_user(
                request,
                f"An action applies to {bound} {model_admin.opts.verbose_name_plural} at most, and more are "
                "selected: nothing was changed. Narrow the selection with the filters (or a search) and apply "
                "it to each part.",
                messages.ERROR,
            )
            return None
        # The rows just read, found by their keys rather than by scanning the whole selection again.
        return action(model_admin, request, queryset.filter(pk__in=keys))

    return bounded


def action_apply(
    model_admin: admin.ModelAdmin, request: HttpRequest, rows: Iterable[Any], service: Callable[[Any], object],
    *, done: str, refused: str,
) -> None:
    """Call `service` on each row; a row it refuses (409, Conflict: already final, still being
    delivered) is left as it is. Says how many of each: `done` and `refused` take {count}."""
    applied = conflicts = 0
    for row in rows:
        try:
            service(row)
            applied += 1
        except Conflict:
            conflicts += 1
    if applied:
        model_admin.message_user(request, done.format(count=applied), messages.SUCCESS)
    if conflicts:
        model_admin.message_user(request, refused.format(count=conflicts), messages.WARNING)


def known_values_filter(field: str, title: str, values: Callable[[], Iterable[str]]) -> type[admin.SimpleListFilter]:
    """A list filter on `field` offering `values`, which the code knows (the registered job types,
    the event types). Django's own filter for a field without choices lists the values the table
    holds: a SELECT DISTINCT over every row (a month of jobs, a year of results) on each page of
    the list. Same parameter as Django's (`<field>__exact`), so links to the list keep working."""

    class KnownValuesFilter(admin.SimpleListFilter):
        parameter_name = f"{field}__exact"

        def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
            return [(value, value) for value in values()]

        def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
            return queryset.filter(**{field: self.value()}) if self.value() else queryset

    KnownValuesFilter.title = title
    return KnownValuesFilter
