"""The admin site: Django's, with its failed logins limited per client address, per username and
all together, and a password change remembered in the browser that made it (core/admin_login.py);
its list actions bounded in rows; deletions confirmed with counts of what goes; how actions apply
a service to each selected row; and the lists of the tables that grow with traffic, paged without
counting every row and read without the clients' payloads, results and bodies."""
from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Iterable
from typing import Any, overload

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Page, Paginator
from django.db import models, transaction
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.functional import cached_property
from django.utils.text import capfirst

from core.admin_login import login_limited, password_change_remembered
from core.db import statements_unbounded, table_rows_estimate
from core.errors import Conflict, NotFound

logger = logging.getLogger(__name__)


class AdminSite(admin.AdminSite):
    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return login_limited(request, lambda: super(AdminSite, self).login(request, extra_context))

    def password_change(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return password_change_remembered(
            request, lambda: super(AdminSite, self).password_change(request, extra_context),
        )


ActionFunction = Callable[[admin.ModelAdmin, HttpRequest, QuerySet[Any]], HttpResponse | None]


class BoundedActionsAdmin(admin.ModelAdmin):
    """A model's admin whose list actions, Django's delete_selected among them, refuse a selection
    of more than ADMIN_ACTION_MAX_ROWS rows: "select all" across the pages of a month of jobs would
    otherwise have one request load and act on every one of them, holding an API process and the
    database for minutes. Every model admin of the project is one."""

    def get_actions(self, request: HttpRequest) -> dict[str, tuple[ActionFunction, str, str]]:
        return {name: (_bounded(func), name, description)
                for name, (func, _, description) in super().get_actions(request).items()}

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        # The list offers "Select all N" only where an action may take N rows (the admin's
        # actions template, core/templates/admin/actions.html).
        return super().changelist_view(request, {"action_max_rows": settings.ADMIN_ACTION_MAX_ROWS, **(extra_context or {})})


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


class EstimatedCountPaginator(Paginator):
    """Django's paginator, whose count of a whole table of `estimate_from_rows` rows or more is
    PostgreSQL's estimate (core/db.py `table_rows_estimate`) rather than a COUNT(*) of every row:
    on a table of 1.5 million jobs that count was 70% of the list's page (docs/deployment.md).
    A list filtered or searched, and a smaller table, are counted exactly.

    The estimate sets how many pages the list offers, and the list says "About N" (the admin's
    pagination template, core/templates/admin/pagination.html). The last page offered is a whole
    page, not cut at the estimate; rows past it (in a table that grew by more than a page since
    PostgreSQL last analyzed it, which autovacuum does once a tenth of it changed) are found as
    anything in millions of rows is, by a filter."""

    estimate_from_rows = 100_000
    estimated = False

    @cached_property
    def count(self) -> int:
        rows = self.object_list
        if isinstance(rows, QuerySet) and _whole_table(rows):
            estimate = table_rows_estimate(rows.model, rows.db)
            if estimate is not None and estimate >= self.estimate_from_rows:
                self.estimated = True
                return estimate
        return super().count

    def page(self, number: Any) -> Page:
        number = self.validate_number(number)
        if not self.estimated:
            return super().page(number)
        # Django's, less its cutting the last page at the count (_get_page is its documented hook).
        bottom = (number - 1) * self.per_page
        return self._get_page(self.object_list[bottom:bottom + self.per_page], number, self)


def _whole_table(queryset: QuerySet[Any]) -> bool:
    """Whether `queryset` reads every row of its table once: no filter (the list's filters, a
    search), no DISTINCT, no slice, no union. `Query.where` and the rest are not documented API
    (Django pinned in requirements/base.txt; tests/core/test_admin.py holds them to it)."""
    query = queryset.query
    return not (query.where or query.distinct or query.is_sliced or query.combinator)


class CountedDeletionAdmin(admin.ModelAdmin):
    """A model's admin whose deletion's confirmation (its page's Delete, the list's "Delete
    selected", and the confirming POST, which checks the same) names the chosen rows and counts
    what goes with them, kind by kind, and the kinds the user may not delete. Django's reads and
    links every row that goes: for a client with a year of jobs (a million jobs, their events
    and results) a page of hundreds of megabytes, past any request timeout, so the client could
    not be deleted at all; for 500 selected jobs, every column of each (payloads and results of
    up to a megabyte) and of each of their events, gigabytes in an API process.
    `deletion_listed_fields`: the columns the chosen rows' names (their `str`) read;
    `deletion_refused`: the deletions the model's admin refuses (a client too large to delete in a
    request, core/admin.py)."""

    deletion_listed_fields: tuple[str, ...] = ("pk",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        # Its page's Delete (Django's delete_view, which reads its row through this queryset)
        # reads the row as the confirmation names it: read whole, a job's payload and result, up
        # to a megabyte each, went through the API process to show its name and delete it by key.
        rows = super().get_queryset(request)
        match = request.resolver_match
        if match is not None and match.url_name == f"{self.opts.app_label}_{self.opts.model_name}_delete":
            return self.rows_listed(rows)
        return rows

    def get_deleted_objects(
        self, objs: QuerySet[Any] | Iterable[Any], request: HttpRequest
    ) -> tuple[list[str], dict[str, int], set[str], list[Any]]:
        opts = self.model._meta
        chosen = list(self.rows_listed(objs))
        counts = {str(opts.verbose_name_plural): len(chosen)}
        lacking: set[str] = set()
        # Every relation to the model, those without a reverse name ("+") too: what its rows'
        # deletion cascades to (those rows' own cascades go with them, uncounted).
        for relation in opts.get_fields(include_hidden=True):
            if not (relation.auto_created and not relation.concrete and relation.on_delete is models.CASCADE):
                continue
            related = relation.related_model
            with transaction.atomic():
                # Counted however many there are, as the deletion deletes them (client_delete):
                # cut at API_DB_STATEMENT_TIMEOUT_SECONDS, a client with years of deliveries had
                # its confirmation, and the confirming POST that counts again, answer 503 every
                # time, and could not be deleted.
                statements_unbounded()
                count = related._default_manager.filter(**{f"{relation.field.name}__in": chosen}).count()
            if not count:
                continue
            counts[str(related._meta.verbose_name_plural)] = count
            if self.admin_site.is_registered(related) and not (
                self.admin_site.get_model_admin(related).has_delete_permission(request)
            ):
                lacking.add(str(related._meta.verbose_name))
        return [f"{capfirst(opts.verbose_name)}: {obj}" for obj in chosen], counts, lacking, []

    def get_actions(self, request: HttpRequest) -> dict[str, tuple[ActionFunction, str, str]]:
        actions = super().get_actions(request)
        if "delete_selected" in actions:
            delete, name, description = actions["delete_selected"]
            actions[name] = (_unless_refused_on_listed_fields(delete), name, description)
        return actions

    def deletion_refused(self, request: HttpRequest, rows: Iterable[Any]) -> bool:
        """Whether the deletion of `rows` (chosen rows, read as `rows_listed` reads them) is
        refused, each reason said to the user in a message: none is here. "Delete selected" asks
        it before its confirmation and before the confirming POST deletes; a model's admin that
        refuses some deletions says which, and asks it on its page's Delete too."""
        return False

    @overload
    def rows_listed(self, objs: QuerySet[Any]) -> QuerySet[Any]: ...
    @overload
    def rows_listed(self, objs: Iterable[Any]) -> Iterable[Any]: ...

    def rows_listed(self, objs: QuerySet[Any] | Iterable[Any]) -> QuerySet[Any] | Iterable[Any]:
        """The chosen rows, a selection read for their names only (`deletion_listed_fields`)."""
        if isinstance(objs, QuerySet):
            return objs.select_related(None).only(*self.deletion_listed_fields)
        return objs


class LargeTableAdmin(CountedDeletionAdmin, BoundedActionsAdmin):
    """The admin of a table that grows with traffic (jobs, results, deliveries, events): its list
    counts no table of millions of rows on every page. Django's list counts the rows it lists
    (the paginator's count: here an estimate for a whole large table) and, for the "N total"
    beside a filtered list's count, the whole table again (off: the list says "Show all").

    A search that is a UUID (a job's id, pasted from a log line, the console or a client) finds
    the rows whose `uuid_search_fields` equal it, by their indexes. Django's search matched it
    as text within each of the search fields of every row (`UPPER(id::text) LIKE '%…%'`, the
    URLs and client names too), which no index serves: the whole table read twice a page, for
    the rows and their count. Any other search is Django's.

    Its deletions are counted (CountedDeletionAdmin): Django's confirmation read each chosen row's
    related rows whole (an event's deliveries joined to it, its body again for each; a delivery's
    attempts), up to ADMIN_ACTION_MAX_ROWS chosen rows in an API process."""

    show_full_result_count = False
    paginator = EstimatedCountPaginator
    uuid_search_fields: tuple[str, ...] = ()
    # The columns its list never shows that a client fills, up to API_MAX_BODY_BYTES each (a
    # job's payload and result, an event's body; a related row's as `event__body`): left unread
    # by the list's page, and by the actions' read of their selection. Read, a page of 100 jobs of
    # 1 MB payloads and results was 200 MB through the API process, 1.2-3.2 s a page. (An action's
    # own write may read its row again: a cancel locks and reads each job whole, as the API's does.)
    list_deferred: tuple[str, ...] = ()

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return _ListWithoutDeferred

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Any],
                           search_term: str) -> tuple[QuerySet[Any], bool]:
        key = _uuid_of(search_term)
        if key is None or not self.uuid_search_fields:
            return super().get_search_results(request, queryset, search_term)
        matches = Q()
        for field in self.uuid_search_fields:
            matches |= Q(**{field: key})
        return queryset.filter(matches), False


class _ListWithoutDeferred(ChangeList):
    """Django's list, its rows read without their admin's `list_deferred` columns."""

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet[Any]:
        return super().get_queryset(request, exclude_parameters).defer(*self.model_admin.list_deferred)


def _uuid_of(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text.strip())
    except ValueError:
        return None


def _unless_refused_on_listed_fields(action: ActionFunction) -> ActionFunction:
    """Django's "Delete selected", refused where the model's admin refuses the deletion
    (`deletion_refused`), and reading its rows to count and log them as the confirmation reads
    them (`rows_listed`)."""
    @functools.wraps(action)  # keeps what Django reads on it (permissions, description)
    def deleted(model_admin: CountedDeletionAdmin, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse | None:
        # The selection up to ADMIN_ACTION_MAX_ROWS (and one more, which the action's own bound
        # refuses): "select all" across the list's pages has no more rows read than that.
        bound = settings.ADMIN_ACTION_MAX_ROWS
        chosen = model_admin.rows_listed(queryset.order_by())
        if model_admin.deletion_refused(request, chosen[: bound + 1] if bound else chosen):
            return None
        return action(model_admin, request, model_admin.rows_listed(queryset))

    return deleted


def action_apply(
    model_admin: admin.ModelAdmin, request: HttpRequest, rows: Iterable[Any], service: Callable[[Any], object],
    *, done: str | Callable[[list[Any]], str], refused: str, logged: str | Callable[[Any], str],
) -> None:
    """Call `service` on each row; a row it refuses (409, Conflict: already final, still being
    delivered) is left as it is, and one it finds gone (NotFound: deleted since the selection was
    read, by a prune, a client or another operator) left out. Says how many of each: `done` and
    `refused` take {count}. A row gone was a 500, the rows before it acted on and not said so.

    Each row acted on gets an entry `logged` in its admin history, under the staff user's name,
    and the action one INFO line for each entry's text: Django records its own changes and
    deletions so, but not an action's, so who canceled a job or disabled an endpoint was nowhere
    to be read. Written for the rows changed even when a later row fails (the database gone
    midway): each row's change is committed as its service returns, and sent again the action
    finds them done already.

    Where what the service did differs from row to row (a queued job's cancel ends it, a running
    one's asks its step to stop), `service` writes it on the row it is given (a job's status after
    its cancel, which the entry's name shows), `logged` is a function of that row and `done` of
    the rows acted on."""
    applied: list[Any] = []
    conflicts = gone = 0
    try:
        for row in rows:
            try:
                service(row)
                applied.append(row)
            except Conflict:
                conflicts += 1
            except NotFound:
                gone += 1
    finally:
        texts: dict[str, list[Any]] = {}
        for row in applied:
            texts.setdefault(logged(row) if callable(logged) else logged, []).append(row)
        for text, logged_rows in texts.items():
            logger.info("Admin action on %s %s by %s: %s", len(logged_rows), model_admin.opts.verbose_name_plural,
                        request.user.get_username(), text)
            # One INSERT for each text (at most ADMIN_ACTION_MAX_ROWS rows in all).
            LogEntry.objects.log_actions(user_id=request.user.pk, queryset=logged_rows, action_flag=CHANGE,
                                         change_message=text)
    if applied:
        model_admin.message_user(request, done(applied) if callable(done) else done.format(count=len(applied)),
                                 messages.SUCCESS)
    if conflicts:
        model_admin.message_user(request, refused.format(count=conflicts), messages.WARNING)
    if gone:
        model_admin.message_user(request, f"{gone} {model_admin.opts.verbose_name_plural} deleted since the list was "
                                 "read: left out.", messages.WARNING)


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
