"""Celery beat, as the service configures it, when it cannot send a periodic task."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
from celery import Celery
from celery.beat import ScheduleEntry
from django.conf import settings
from kombu.utils.imports import symbol_by_name

from tests.conftest import free_port


def test_a_periodic_task_beat_cannot_send_is_one_warning_line_a_minute(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given beat's scheduler, on a broker that is down (nothing listens at its address; Celery
    # would take the suite's from the environment instead)
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    app = Celery("beat-test", broker=f"redis://127.0.0.1:{free_port()}/0", set_as_current=False)
    app.conf.task_publish_retry = False
    app.conf.broker_transport_options = {"max_retries": 0}  # fails at once
    scheduler = symbol_by_name(settings.CELERY_BEAT_SCHEDULER)(
        app=app, schedule_filename=str(tmp_path / "schedule"), lazy=True
    )
    entries = [ScheduleEntry(name=name, task=f"tests.{name}", schedule=5.0, app=app) for name in ("sweep", "prune")]

    # When each is due three times over
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            for entry in entries:
                scheduler.apply_entry(entry)

    # Then the log says so once for each, in a line at WARNING, with no traceback
    unsent = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert [record.getMessage().split(":")[0] for record in unsent] == [
        "Could not send periodic task sweep", "Could not send periodic task prune"
    ]
    assert all(record.levelno == logging.WARNING and record.exc_info is None for record in unsent)
