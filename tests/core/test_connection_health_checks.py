"""Around each request and each task, a process keeps its database connection and health-checks
it only after a pause (core.db.HEALTH_CHECK_AFTER_IDLE_SECONDS)."""
from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from django.core.signals import request_finished, request_started
from django.db import connections

from core import celery, db
from jobs.models import Job

pytestmark = pytest.mark.django_db(transaction=True)


def task() -> None:
    """What a worker does around a task that reads the database."""
    celery._database_connections_checked()
    Job.objects.exists()
    celery._database_connections_released()


def request() -> None:
    """What Django's handler does around a request that reads the database. (Django's test client
    reconnects Django's own receivers after each request, after ours: connect ours again, so they
    run last, as in a server process.)"""
    request_started.disconnect(dispatch_uid="core.db.checked")
    request_started.connect(db.connections_checked_if_recent, dispatch_uid="core.db.checked")
    request_started.send(sender=None, environ={})
    Job.objects.exists()
    request_finished.send(sender=None)


@pytest.mark.parametrize("unit", [task, request])
def test_a_connection_is_health_checked_only_after_a_pause(
    unit: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a persistent, health-checked connection (as in production) that counts its checks
    connection = connections["default"]
    connection.ensure_connection()
    monkeypatch.setattr(connection, "close_at", None)
    monkeypatch.setattr(connection, "health_check_enabled", True)
    monkeypatch.setattr(db._last_used, "ended", None, raising=False)
    checks: list[bool] = []
    is_usable = connection.is_usable
    monkeypatch.setattr(connection, "is_usable", lambda: checks.append(True) or is_usable())

    # When requests (or tasks) run back to back, the first after none at all
    unit()
    unit()
    unit()

    # Then only the first checked the connection
    assert len(checks) == 1

    # And one after a pause checks it again, on the same connection
    raw = connection.connection
    db._last_used.ended = time.monotonic() - db.HEALTH_CHECK_AFTER_IDLE_SECONDS - 0.1
    unit()
    assert len(checks) == 2
    assert connection.connection is raw
