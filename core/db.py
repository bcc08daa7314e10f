"""Database helpers shared by the apps."""
from __future__ import annotations

from typing import Any, TypeVar

from django.db import connections
from django.db.models import Model, QuerySet
from django.db.models.sql import UpdateQuery

M = TypeVar("M", bound=Model)


def delete_in_batches(queryset: QuerySet, *, batch_size: int, max_batches: int) -> int:
    """Delete what `queryset` matches, `batch_size` rows at a time, at most `max_batches` times;
    returns how many rows of its model went. Small batches never lock a big slice of a table;
    each batch re-applies the queryset's filter, so a row that stopped matching is kept."""
    label = queryset.model._meta.label
    deleted = 0
    for _ in range(max_batches):
        ids = list(queryset.values_list("pk", flat=True)[:batch_size])
        if not ids:
            break
        _total, per_model = queryset.filter(pk__in=ids).delete()
        deleted += per_model.get(label, 0)
    return deleted


def update_returning(queryset: QuerySet[M], **values: Any) -> list[M]:
    """UPDATE the rows `queryset` matches, setting `values`, and return them as updated: one
    statement, where `queryset.update()` gives a count and a second query would read the rows.

    Django composes the statement (filters, F() expressions, a sliced or SKIP LOCKED subquery
    in `pk__in`, each value prepared by its field); this adds `RETURNING`, which PostgreSQL and
    SQLite (3.35+) both have.
    """
    model = queryset.model
    query = queryset.query.chain(UpdateQuery)
    query.add_update_values(values)
    compiler = query.get_compiler(queryset.db)
    compiler.pre_sql_setup()
    statement, params = compiler.as_sql()
    quote = connections[queryset.db].ops.quote_name
    columns = ", ".join(quote(field.column) for field in model._meta.concrete_fields)
    return list(model._default_manager.db_manager(queryset.db).raw(f"{statement} RETURNING {columns}", params))
