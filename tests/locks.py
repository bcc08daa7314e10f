"""Holding rows from a connection of the test's own, so that concurrent requests meet inside
their transactions at a known point: what a race needs to happen every time rather than now and
then."""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import psycopg2
from django.db import connection


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
                # queue): counted alike. A transaction reads the activity once unless told to
                # read it again.
                deadline = time.monotonic() + 10
                while True:
                    cursor.execute("SELECT pg_stat_clear_snapshot()")
                    cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                   " AND cardinality(pg_blocking_pids(pid)) > 0")
                    if cursor.fetchone()[0] >= count:
                        return
                    assert time.monotonic() < deadline, f"fewer than {count} requests waited on the held rows"
                    time.sleep(0.02)

            yield blocked
    finally:
        held.rollback()
        held.close()
