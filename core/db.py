"""What the apps' hand-written SQL (`jobs/sql.py`, `webhooks/sql.py`) shares: a model's columns,
its rows read back as model instances, batched deletes, foreign keys checked at each statement,
a table's estimated size, reads bounded in time, and the SQLSTATE an error ended with.

Reading a row as the ORM would means applying each column's converters (JSON decoding, SQLite's
text dates and UUIDs). Django does that in its query compiler; the one call here that reaches
below the documented API is `converters_of`, pinned with Django in requirements/base.txt and
held to the ORM's own reading by tests/core/test_db.py.
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from django.db import connections, transaction
from django.db.models import Model, QuerySet

M = TypeVar("M", bound=Model)

_Converters = list[tuple[int, Any, list[Callable[..., Any]]]]


def columns_of(model: type[Model], alias: str = "default", *, prefix: str = "") -> str:
    """Every concrete column of `model`, quoted, in field order (what `model_from_row` reads)."""
    quote = connections[alias].ops.quote_name
    return ", ".join(f"{prefix}{quote(field.column)}" for field in model._meta.concrete_fields)


@functools.cache
def converters_of(model: type[Model], alias: str) -> _Converters:
    """Each column's converters, as a queryset of `model` would apply them: the backend's (SQLite
    dates, UUIDs) then the field's own (`from_db_value`: JSON). Worked out once per model.

    Not documented API: `DatabaseOperations.get_db_converters` and `Expression.get_db_converters`
    are what Django's SQLCompiler.get_converters calls (stable since Django 1.8)."""
    connection = connections[alias]
    converters: _Converters = []
    for index, field in enumerate(model._meta.concrete_fields):
        column = field.get_col(model._meta.db_table)
        functions = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
        if functions:
            converters.append((index, column, functions))
    return converters


def model_from_row(model: type[M], row: Sequence[Any], alias: str = "default") -> M:
    """A `model` instance from a row of its `columns_of` columns, as a queryset would load it
    (`Model.from_db`: the instance is saved, in database `alias`)."""
    connection = connections[alias]
    values = list(row)
    for index, column, functions in converters_of(model, alias):
        for convert in functions:
            values[index] = convert(values[index], column, connection)
    names = [field.attname for field in model._meta.concrete_fields]
    return model.from_db(alias, names, values)


def insert_values(instance: Model, alias: str = "default", *, exclude: str = "") -> tuple[str, list[Any]]:
    """The quoted columns an INSERT of `instance` writes (every concrete field but a
    database-made key and the field named `exclude`, which the statement fills itself) and
    their values, each prepared by its field as `save()` would. A field with a database default
    is written too, as `save()` writes it (its `db_returning` says only that it is read back)."""
    connection = connections[alias]
    fields = [
        field for field in instance._meta.concrete_fields
        if field is not instance._meta.auto_field and field.name != exclude
    ]
    values = [field.get_db_prep_save(field.pre_save(instance, True), connection) for field in fields]
    return ", ".join(connection.ops.quote_name(field.column) for field in fields), values


def delete_in_batches(queryset: QuerySet, *, batch_size: int, max_batches: int, skip_locked: bool = False,
                      also_lock: Callable[[list[Any]], None] | None = None) -> int:
    """Delete what `queryset` matches, `batch_size` rows at a time, at most `max_batches` times;
    returns how many rows of its model went. Small batches never lock a big slice of a table;
    each batch re-applies the queryset's filter, so a row that stopped matching is kept.

    `skip_locked`: each batch first locks its rows (FOR UPDATE SKIP LOCKED), in the transaction
    that deletes them, for rows that writers add to under their own lock (a redelivery locks its
    event before adding a delivery): the writer goes first and its row is left to the next run,
    or it waits and finds the row gone. Unlocked, a writer between the batch's reads and its
    deletes added a row the deletion had not read, and the batch failed at commit on its
    foreign key, undone with the rest of the run.

    `also_lock(ids)`: called in each batch's transaction with the ids it read (locked first, with
    `skip_locked`), before it deletes them, to lock the rows their deletion's triggers update in
    an order of the caller's, where Django's deletion, a hundred rows a statement, takes them
    statement by statement."""
    label = queryset.model._meta.label
    deleted = 0
    for _ in range(max_batches):
        with transaction.atomic(using=queryset.db):
            due = queryset.select_for_update(skip_locked=True, of=("self",)) if skip_locked else queryset
            ids = list(due.values_list("pk", flat=True)[:batch_size])
            if not ids:
                break
            if also_lock is not None:
                also_lock(ids)
            # Deleting what it loads, Django reads every column of the rows it cascades from:
            # only their ids, not a thousand payloads, results or event bodies of up to a
            # megabyte each (gigabytes in the worker).
            _total, per_model = queryset.filter(pk__in=ids).only("pk").delete()
        deleted += per_model.get(label, 0)
    return deleted


def constraints_checked_at_once(alias: str = "default") -> None:
    """Check the foreign keys of the rest of the transaction at each statement rather than at its
    commit (PostgreSQL; Django makes them deferrable, checked at commit): so that a violation is
    raised inside the atomic block that caused it, where it can be undone and tried again, even
    when that block is a savepoint in a caller's transaction. Hand-written: the ORM has no
    `SET CONSTRAINTS`."""
    connection = connections[alias]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")


def table_rows_estimate(model: type[Model], alias: str = "default") -> int | None:
    """PostgreSQL's estimate of the rows in `model`'s table, the planner's own (`pg_class.reltuples`,
    which VACUUM and ANALYZE set, and autovacuum again once a tenth of the table changed), read in one catalogue row
    rather than counted over every row; None on another database, or for a table never analyzed.
    Hand-written: the ORM reads no catalogue."""
    connection = connections[alias]
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass",
                       [connection.ops.quote_name(model._meta.db_table)])
        row = cursor.fetchone()
    return int(row[0]) if row is not None and row[0] >= 0 else None


# PostgreSQL's SQLSTATEs the code tells apart: deadlock_detected (the transaction PostgreSQL
# aborted may be made again), and a statement ended for a bound reads_bounded set:
# query_canceled (statement_timeout) and lock_not_available (lock_timeout), which an API process's
# connections also have (API_DB_STATEMENT_TIMEOUT_SECONDS, API_DB_LOCK_TIMEOUT_SECONDS).
DEADLOCK_DETECTED = "40P01"
LOCK_NOT_AVAILABLE = "55P03"
QUERY_CANCELED = "57014"
_TIMED_OUT = frozenset({QUERY_CANCELED, LOCK_NOT_AVAILABLE})


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE PostgreSQL ended `exc`'s statement with (Django's DatabaseError wraps the
    driver's error, which carries it); None for another database's error or none at all."""
    return getattr(exc.__cause__, "pgcode", None)


@contextlib.contextmanager
def reads_bounded(*, seconds: float, lock_wait_seconds: float, alias: str = "default") -> Iterator[None]:
    """The block's statements in one transaction, each ended by PostgreSQL (an OperationalError,
    `timed_out`) once it has run `seconds`, or waited `lock_wait_seconds` for a lock: for reads
    that may wait on a lock a migration's ALTER TABLE, a LOCK TABLE or a TRUNCATE holds, or run
    long on a huge table, while their request holds one of the process's turns. `SET LOCAL`
    (set_config's `true`), so the bounds end with the transaction and never reach a connection's
    next user. SQLite (embedded mode) is a file: its own busy timeout bounds a wait."""
    connection = connections[alias]
    if connection.vendor != "postgresql":
        yield
        return
    outer = connection.in_atomic_block
    with transaction.atomic(using=alias):
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'), "
                "set_config('statement_timeout', %s, true), set_config('lock_timeout', %s, true)",
                [f"{max(1, round(seconds * 1000))}ms", f"{max(1, round(lock_wait_seconds * 1000))}ms"],
            )
            previous = cursor.fetchone()[:2]
        yield
        if outer:
            # Released into a transaction of the caller's (a test's), the savepoint keeps what it
            # set: put back what that transaction had. (Rolled back, it undid them itself.)
            with connection.cursor() as cursor:
                cursor.execute("SELECT set_config('statement_timeout', %s, true), set_config('lock_timeout', %s, true)",
                               previous)


def statements_unbounded(alias: str = "default") -> None:
    """Lift the API process's bound on a statement's run (API_DB_STATEMENT_TIMEOUT_SECONDS) for
    the rest of the caller's transaction, for a write that must finish however many rows it
    touches (a client's deletion, an endpoint's, whose log may hold millions of deliveries): cut
    at the bound, it was undone whole every time, and never done. `SET LOCAL`, so it ends with
    the transaction. A lock wait stays bounded."""
    connection = connections[alias]
    if connection.vendor != "postgresql":
        return
    if not connection.in_atomic_block:
        raise RuntimeError("statements_unbounded() is for a transaction: it would outlive the request.")
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('statement_timeout', '0', true)")


def timed_out(exc: BaseException) -> bool:
    """Whether `exc` is a statement PostgreSQL ended for reads_bounded's bounds."""
    return sqlstate(exc) in _TIMED_OUT
