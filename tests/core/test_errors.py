"""core/errors.py's one handler and a full disk: 503 `storage_full` with Retry-After, whether the
disk refused a file (the embedded mode's file cache) or SQLite; any other OSError stays a 500."""
from __future__ import annotations

import errno
import sqlite3

import pytest
from django.db import OperationalError, connection

from core.errors import exception_handler

pytestmark = pytest.mark.django_db


def answer(exc: Exception) -> tuple[int, str, str | None]:
    connection.ensure_connection()  # the database answers: this is not its outage
    response = exception_handler(exc, {"view": None, "request": None})
    assert response is not None
    return response.status_code, response.data["error"]["code"], response.headers.get("Retry-After")


def sqlite_full() -> OperationalError:
    """SQLite's own `database or disk is full`, wrapped as Django wraps a driver's error."""
    database = sqlite3.connect(":memory:")
    database.execute("PRAGMA max_page_count = 2")
    database.execute("CREATE TABLE t (x)")
    try:
        for _ in range(100):
            database.execute("INSERT INTO t VALUES (?)", ("x" * 1000,))
    except sqlite3.OperationalError as exc:
        try:
            raise OperationalError(*exc.args) from exc
        except OperationalError as wrapped:
            return wrapped
    raise AssertionError("SQLite never filled")


def test_a_write_refused_for_a_full_disk_answers_503_storage_full() -> None:
    assert answer(OSError(errno.ENOSPC, "No space left on device")) == (503, "storage_full", "30")


def test_sqlite_full_answers_503_storage_full() -> None:
    assert answer(sqlite_full()) == (503, "storage_full", "30")


def test_another_os_error_stays_a_500() -> None:
    assert answer(PermissionError(errno.EACCES, "Permission denied")) == (500, "server_error", None)
