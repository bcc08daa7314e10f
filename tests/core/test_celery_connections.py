"""Around each task a worker keeps its database connection, health-checking it only after a pause."""
from __future__ import annotations

import time

import pytest
from django.db import connections

from core import celery
from jobs.models import Job

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_connection_is_health_checked_only_after_a_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a persistent, health-checked connection (as in production) that counts its checks
    connection = connections["default"]
    connection.ensure_connection()
    monkeypatch.setattr(connection, "close_at", None)
    monkeypatch.setattr(connection, "health_check_enabled", True)
    monkeypatch.setattr(celery._last_task, "ended", None, raising=False)
    checks: list[bool] = []
    is_usable = connection.is_usable
    monkeypatch.setattr(connection, "is_usable", lambda: checks.append(True) or is_usable())

    def task() -> None:  # what a worker does around a task that reads the database
        celery._database_connections_checked()
        Job.objects.exists()
        celery._database_connections_released()

    # When tasks run back to back, the first after none at all
    task()
    task()
    task()

    # Then only the first checked the connection
    assert len(checks) == 1

    # And a task after a pause checks it again, on the same connection
    raw = connection.connection
    celery._last_task.ended = time.monotonic() - celery.HEALTH_CHECK_AFTER_IDLE_SECONDS - 0.1
    task()
    assert len(checks) == 2
    assert connection.connection is raw
