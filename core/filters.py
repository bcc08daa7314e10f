"""List filters every app's lists share, and the one reading of a list's query string."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import django_filters
from django import forms
from django.db.models import QuerySet
from django.forms.utils import from_current_timezone
from rest_framework.request import Request
from rest_framework.settings import api_settings

from core.errors import ApplicationError
from core.pagination import NewestFirstCursorPagination, parameters_refused
from core.timestamps import timestamp_parse


class UtcIsoDateTimeField(django_filters.fields.IsoDateTimeField):
    """A date-time read as the API's bodies read one (core.timestamps.timestamp_parse): Django's
    own reader took an offset no clock shows, such as +01:60, for another (+02:00). ISO 8601
    allows UTC offsets PostgreSQL refuses (beyond +-15:59, a 500 when queried): compare in UTC,
    and refuse times that fall outside the representable years."""

    def to_python(self, value: object) -> datetime | None:
        if value in self.empty_values:
            return None
        parsed = timestamp_parse(str(value).strip())
        if parsed is None:
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid")
        try:
            return from_current_timezone(parsed).astimezone(UTC)
        except OverflowError:
            raise forms.ValidationError("Date and time out of range.", code="invalid") from None


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField


# A query's parameters the 400 names at most.
_PROBLEMS_NAMED = 10
# How the 400 names a parameter with no name (`?=FAILURE`: a URL builder's empty key), which
# JSON would show as "", easily read as a missing key.
_EMPTY_NAME = "(empty name)"

# A list's filter set when it has no filters: its query may hold its paginator's parameters alone.
NO_FILTERS = django_filters.FilterSet


def query_filtered(
    filterset_class: type[django_filters.FilterSet],
    request: Request,
    queryset: QuerySet[Any],
    *,
    pagination: type[NewestFirstCursorPagination],
    read_elsewhere: Mapping[str, Callable[[str], bool]] | None = None,
) -> QuerySet[Any]:
    """`queryset` filtered by the query string, or 400 `invalid_filter` naming, in one answer, each
    parameter the list does not take or that is given more than once (the first ten), each
    filter's invalid value, and an invalid `page_size` or `cursor`; with no such filter problem, an
    invalid `page_size` or `cursor` is the paginator's 400 (core.pagination.parameters_refused).

    django-filter ignores a name it does not know and reads the last of a repeated one: a
    misspelt filter (`stauts=FAILURE`), or another list's (`subject_id=` for `job=`), answered the
    client's every row as though all matched, and a script acting on "the failed jobs" acted on
    all of them. The list takes the filter set's names, its paginator's, DRF's `format`, and those
    `read_elsewhere` accepts (keyed by how the answer shows them, e.g. `metadata[<key>]`), each
    once too. A pair with neither name nor value (`?=`, as `?&` is) asks nothing: it is ignored."""
    elsewhere = read_elsewhere or {}
    taken = [*filterset_class.base_filters, pagination.cursor_query_param]
    # DRF's content negotiation reads `?format=json`; a paginator may take no page size.
    taken += [name for name in (pagination.page_size_query_param, api_settings.URL_FORMAT_OVERRIDE) if name]
    problems: dict[str, list[str]] = {}
    for name, values in request.query_params.lists():
        if len(problems) == _PROBLEMS_NAMED:
            break  # each unknown one's detail lists what the list takes: bounded, not 29 times the query's size
        if not name and not any(values):
            continue
        if name not in taken and not any(accepts(name) for accepts in elsewhere.values()):
            problems[name or _EMPTY_NAME] = [f"Not a parameter of this list; it takes {', '.join([*taken, *elsewhere])}."]
        elif len(values) > 1:
            problems[name] = ["Given more than once; the list reads one value of it."]
    filterset = filterset_class(request.query_params, queryset=queryset, request=request)
    # A filter's value is checked beside the names (the last of a repeated one, named above):
    # one answer names every mistake, where mending one revealed the next.
    problems |= {name: errors for name, errors in filterset.errors.items() if name not in problems}
    # The page's parameters too, else mending the filter revealed them: named as their own 400s
    # name them (a repeated one is named above), read before any query as the filters are.
    paging = pagination().parameter_errors(request)
    if problems:
        for error in paging:
            problems |= {name: why for name, why in error.details.items() if name not in problems}
        raise ApplicationError("Invalid filter; see details.", code="invalid_filter", details=problems)
    if paging:
        raise parameters_refused(paging)
    return filterset.qs
