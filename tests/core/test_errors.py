"""A full disk: 503 `storage_full` with Retry-After, whether the disk refused a file (the embedded
mode's file cache) or SQLite, from the API's one handler (core/errors.py) and from the staff's
pages (core/middleware.py OutageMiddleware); any other OSError stays a 500."""
from __future__ import annotations

import errno
import sqlite3

import pytest
from django.contrib.auth.models import User
from django.db import OperationalError, connection
from django.test import Client as BrowserClient

from console import selectors
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


@pytest.mark.parametrize(("error", "code"), [(OSError(errno.ENOSPC, "No space left on device"), "storage_full"),
                                             (PermissionError(errno.EACCES, "Permission denied"), None)])
def test_the_console_on_a_full_disk_answers_503_storage_full(
    monkeypatch: pytest.MonkeyPatch, error: OSError, code: str | None
) -> None:
    # Given a signed-in operator, and a console whose figures meet the error (the file cache's write)
    def refused(**kwargs: object) -> None:
        raise error

    monkeypatch.setattr(selectors, "jobs_by_type_and_status", refused)
    browser = BrowserClient(raise_request_exception=False)
    browser.force_login(User.objects.create_user("operator", is_staff=True, is_superuser=True))

    # When the operator opens the console
    response = browser.get("/console/")

    # Then a full disk is a 503 saying so, and any other error stays Django's 500
    if code is None:
        assert response.status_code == 500
    else:
        assert (response.status_code, response.json()["error"]["code"], response["Retry-After"]) == (503, code, "30")
