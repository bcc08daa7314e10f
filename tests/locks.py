"""Holding rows from a connection of the test's own, so that concurrent requests meet inside
their transactions at a known point: what a race needs to happen every time rather than now and
then."""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg2
from django.db import DatabaseError, connection

T = TypeVar("T")


@contextlib.contextmanager
def rows_held(*statements: str) -> Iterator[Callable[[int], None]]:
    """Run `statements` (SELECT ... FOR UPDATE) in a transaction of another connection, held
    until the block ends; yields a wait for that many backends of the database blocked."""
    params = connection.get_connection_params()
    held = psycopg2.connect(**{k: v for k, v in params.items() if k != "cursor_factory"})
    try:
        with held.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)

            def blocked(count: int) -> None:
                # The first request waits on this transaction, the next on the first (the row's
                # queue): counted alike.
                backends_blocked(cursor, count)

            yield blocked
    finally:
        held.rollback()
        held.close()


def backends_blocked(cursor: Any, count: int) -> None:
    """Wait (up to 10 s) until `count` backends of the test database wait for a lock. A
    transaction reads the activity once unless told to read it again."""
    deadline = time.monotonic() + 10
    while True:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                       " AND cardinality(pg_blocking_pids(pid)) > 0")
        if cursor.fetchone()[0] >= count:
            return
        assert time.monotonic() < deadline, f"fewer than {count} backends waited for a lock"
        time.sleep(0.02)


@contextlib.contextmanager
def meanwhile(work: Callable[[], T], *, at: str, after: bool = False) -> Iterator[list[T | DatabaseError]]:
    """Run `work` in a thread, on a connection of its own, as this connection runs its first
    statement starting with `at`: just before it, or just after it (`after`). The work is given
    a moment (it may have to wait for this connection's transaction: not waited for), and joined
    as the block ends; the list yielded then holds what it returned, or the DatabaseError it
    raised. How a worker's transition meets an operator's or a client's deletion halfway."""
    outcome: list[T | DatabaseError] = []

    def run() -> None:
        try:
            outcome.append(work())
        except DatabaseError as exc:
            outcome.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)

    def start_at(sql: str) -> None:
        if sql.startswith(at) and thread.ident is None:
            thread.start()
            thread.join(timeout=1)

    def wrapper(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        if not after:
            start_at(sql)
        result = execute(sql, params, many, context)
        if after:
            start_at(sql)
        return result

    with connection.execute_wrapper(wrapper):
        yield outcome
    thread.join(timeout=30)
