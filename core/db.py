"""Database helpers shared by the apps."""
from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from django.db import connections
from django.db.models import Model, QuerySet
from django.db.models.sql import UpdateQuery

M = TypeVar("M", bound=Model)

# When this thread's last request or task ended less than this long ago, the next one does not
# health-check its database connections again: with CONN_HEALTH_CHECKS, Django runs a `SELECT 1`
# round trip before every request's first query, and workers before every task, two on a job's
# way to its webhook (docs/benchmarks.md). An idle connection is still checked. One that broke
# within the second fails its first query: that request answers 500 and the connection is
# closed after it; job and delivery tasks retry a DatabaseError, periodic ones run at the next tick.
HEALTH_CHECK_AFTER_IDLE_SECONDS = 1.0

_last_used = threading.local()


def connections_checked_if_recent(**kwargs: Any) -> None:
    """At the start of a request or task, after Django's `close_old_connections`: count this
    thread's open connections as health-checked if it last used them within
    HEALTH_CHECK_AFTER_IDLE_SECONDS (a signal receiver, hence **kwargs)."""
    ended = getattr(_last_used, "ended", None)
    if ended is not None and time.monotonic() - ended < HEALTH_CHECK_AFTER_IDLE_SECONDS:
        for connection in connections.all(initialized_only=True):
            if connection.connection is not None:
                # Django's own mark for "checked since the request began" (an attribute of its
                # database wrappers since 4.1, not a documented API).
                connection.health_check_done = True


def connections_used(**kwargs: Any) -> None:
    """At the end of a request or task: when this thread last used its connections."""
    _last_used.ended = time.monotonic()


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
    connection = connections[queryset.db]
    columns = _row_reading(model, queryset.db)[0]
    with connection.cursor() as cursor:
        cursor.execute(f"{statement} RETURNING {', '.join(columns)}", params)
        rows = cursor.fetchall()
    return [_instance_from_row(model, connection, row) for row in rows]


def update_one_returning(
    model: type[M], *, pk: Any, condition: str, params: Sequence[Any] = (), using: str = "default",
    **values: Any,
) -> M | None:
    """UPDATE the `model` row with primary key `pk` if the SQL `condition` (on its columns)
    holds, setting `values`, each prepared by its field as `update()` would; the row as updated,
    or None. `update_returning` for one row by key: its statement is written once per model,
    condition and set of fields, where the ORM composes it on every call (0.3-0.45 ms of CPU, two
    to three times the round trip; docs/benchmarks.md)."""
    connection = connections[using]
    statement = _update_one_statement(model, tuple(values), condition, using)
    meta = model._meta
    prepared = [meta.get_field(name).get_db_prep_save(value, connection) for name, value in values.items()]
    with connection.cursor() as cursor:
        cursor.execute(statement, [*prepared, meta.pk.get_db_prep_value(pk, connection), *params])
        row = cursor.fetchone()
    return None if row is None else _instance_from_row(model, connection, row)


@functools.cache
def _update_one_statement(model: type[Model], names: tuple[str, ...], condition: str, alias: str) -> str:
    quote = connections[alias].ops.quote_name
    meta = model._meta
    assignments = ", ".join(f"{quote(meta.get_field(name).column)} = %s" for name in names)
    return (
        f"UPDATE {quote(meta.db_table)} SET {assignments} WHERE {quote(meta.pk.column)} = %s "
        f"AND ({condition}) RETURNING {', '.join(_row_reading(model, alias)[0])}"
    )


def select_one(
    model: type[M], *, where: str, params: Sequence[Any], link: str | None = None, using: str = "default"
) -> M | None:
    """The first `model` row matching the SQL condition `where` (its table is aliased `t`
    there), as a queryset would load it; with `link`, the row its foreign key `link` points at
    (aliased `parent`) is read in the same statement and set on it, as `select_related(link)`
    does. The statement is written once per model, link and condition, where the ORM composes a
    query on every call and a `RawQuerySet` works out its columns and converters (about half a
    millisecond of CPU here, more than the round trip; docs/benchmarks.md)."""
    connection = connections[using]
    with connection.cursor() as cursor:
        cursor.execute(_select_one_statement(model, link, where, using), params)
        row = cursor.fetchone()
    if row is None:
        return None
    width = len(model._meta.concrete_fields)
    instance = _instance_from_row(model, connection, row[:width])
    if link is not None:
        parent_model = model._meta.get_field(link).related_model
        setattr(instance, link, _instance_from_row(parent_model, connection, row[width:]))
    return instance


@functools.cache
def _select_one_statement(model: type[Model], link: str | None, where: str, alias: str) -> str:
    quote = connections[alias].ops.quote_name
    columns = [f"t.{c}" for c in _row_reading(model, alias)[0]]
    join = ""
    if link is not None:
        foreign_key = model._meta.get_field(link)
        parent_model = foreign_key.related_model
        columns += [f"parent.{c}" for c in _row_reading(parent_model, alias)[0]]
        join = (
            f" JOIN {quote(parent_model._meta.db_table)} parent"
            f" ON parent.{quote(parent_model._meta.pk.column)} = t.{quote(foreign_key.column)}"
        )
    return f"SELECT {', '.join(columns)} FROM {quote(model._meta.db_table)} t{join} WHERE {where} LIMIT 1"


@functools.cache
def _insert_fields(model: type[Model], skip: str | None = None) -> list[Any]:
    """The fields an INSERT of `model` writes: all concrete ones but a database-made primary
    key (and `skip`, a foreign key the statement fills itself)."""
    return [
        field for field in model._meta.concrete_fields
        if field.name != skip and not field.db_returning
    ]


def _columns_and_values(instance: Model, connection: Any, *, skip: str | None = None) -> tuple[list[str], list[Any]]:
    """The quoted columns an INSERT of `instance` writes, and their values, each prepared by
    its field as a save would (defaults, JSON, dates)."""
    fields = _insert_fields(type(instance), skip)
    values = [field.get_db_prep_save(field.pre_save(instance, True), connection) for field in fields]
    return [connection.ops.quote_name(field.column) for field in fields], values


def _saved(instance: Model, alias: str) -> None:
    instance._state.adding = False
    instance._state.db = alias


def insert_if(instance: Model, *, condition: str, params: Sequence[Any]) -> bool:
    """INSERT `instance` only if the SQL `condition` holds, checked by the same statement
    (INSERT ... SELECT ... WHERE); whether it was inserted. One round trip where a check,
    then a save, take two. The instance's primary key must be made in Python (a UUID)."""
    connection = connections[instance._state.db or "default"]
    columns, values = _columns_and_values(instance, connection)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {connection.ops.quote_name(instance._meta.db_table)} ({', '.join(columns)}) "
            f"SELECT {', '.join(['%s'] * len(values))} WHERE {condition}",
            [*values, *params],
        )
        inserted = cursor.rowcount == 1
    if inserted:
        _saved(instance, connection.alias)
    return inserted


def insert_with_parent(instance: Model, *, parent: Model, link: str) -> None:
    """INSERT `parent` and `instance`, whose foreign key `link` points at it, and set both
    primary keys. On PostgreSQL one statement (an INSERT inside WITH), one round trip where two
    saves take two; elsewhere (SQLite has no INSERT inside WITH) the two saves."""
    connection = connections[instance._state.db or "default"]
    if connection.vendor != "postgresql":
        parent.save(force_insert=True, using=connection.alias)
        setattr(instance, link, parent)
        instance.save(force_insert=True, using=connection.alias)
        return
    quote = connection.ops.quote_name
    link_column = quote(instance._meta.get_field(link).column)
    parent_columns, parent_values = _columns_and_values(parent, connection)
    columns, values = _columns_and_values(instance, connection, skip=link)
    parent_key, key = quote(parent._meta.pk.column), quote(instance._meta.pk.column)
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH parent AS (INSERT INTO {quote(parent._meta.db_table)} ({', '.join(parent_columns)}) "
            f"VALUES ({', '.join(['%s'] * len(parent_values))}) RETURNING {parent_key}) "
            f"INSERT INTO {quote(instance._meta.db_table)} ({link_column}, {', '.join(columns)}) "
            f"SELECT parent.{parent_key}, {', '.join(['%s'] * len(values))} FROM parent "
            f"RETURNING {key}, {link_column}",
            [*parent_values, *values],
        )
        instance.pk, parent.pk = cursor.fetchone()
    _saved(parent, connection.alias)
    _saved(instance, connection.alias)
    setattr(instance, link, parent)


_Converters = list[tuple[int, Any, list[Callable[..., Any]]]]


@functools.cache
def _row_reading(model: type[Model], alias: str) -> tuple[list[str], list[str], _Converters]:
    """How to read every concrete field of `model` back from a row: the quoted columns, the
    field names, and each column's converters, those a queryset would apply (JSON, time zones).
    Worked out once per model: a RawQuerySet did it on every call, a good part of a job
    transition's CPU (docs/benchmarks.md)."""
    connection = connections[alias]  # per thread, but what the converters are is not
    fields = model._meta.concrete_fields
    columns = [connection.ops.quote_name(field.column) for field in fields]
    converters: _Converters = []
    for index, field in enumerate(fields):
        column = field.get_col(model._meta.db_table)
        functions = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
        if functions:
            converters.append((index, column, functions))
    return columns, [field.attname for field in fields], converters


def _instance_from_row(model: type[M], connection: Any, row: Sequence[Any]) -> M:
    """A `model` instance from a row of its columns in `_row_reading` order, as a queryset
    would make it."""
    _columns, names, converters = _row_reading(model, connection.alias)
    values = list(row)
    for index, column, functions in converters:
        for convert in functions:
            values[index] = convert(values[index], column, connection)
    return model.from_db(connection.alias, names, values)
