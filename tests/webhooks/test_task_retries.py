"""A database blip does not strand a webhook: the delivery tasks run again once it is over.

Unit tests of the tasks' retry policy, run in this process (`Task.apply`, which runs a retry at
once); the end-to-end case is tests/faults/test_postgres_restart.py.
"""
from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import OperationalError

from webhooks import attempts, tasks


@pytest.mark.parametrize(
    ("task", "service", "kwargs"),
    [
        (tasks.deliveries_send_for_subject, "deliveries_send_for_subject", {"subject_id": str(uuid.uuid4())}),
        (tasks.deliveries_attempt, "deliveries_attempt", {"delivery_ids": [1, 2]}),
        (tasks.deliveries_drain, "deliveries_drain", {}),
    ],
)
def test_a_delivery_task_runs_again_after_a_database_error(
    task: Any, service: str, kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a database that fails the first call only
    calls: list[dict[str, Any]] = []

    def flaky(**call: Any) -> int:
        calls.append(call)
        if len(calls) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return 0

    monkeypatch.setattr(attempts, service, flaky)

    # When the task runs
    result = task.apply(kwargs=kwargs)

    # Then it ran again and succeeded
    assert result.successful(), result.traceback
    assert len(calls) == 2
