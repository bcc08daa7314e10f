"""A worker's heartbeats and shutdown mark as its signals write them (console/heartbeats.py).
The heartbeat thread writes on a connection of its own, so the rows are committed
(transactional_db)."""
from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import OperationalError
from django.db.models.functions import Now
from django.test import Client as BrowserClient
from django.utils import timezone

from console import heartbeats, selectors, services
from console.models import WorkerHeartbeat
from console.services import LOST_AFTER_SECONDS
from core import log_volume
from tests.console.test_console_page import row_of, section

pytestmark = pytest.mark.usefixtures("transactional_db")

HOSTNAME = "jobs@reused"


@pytest.fixture(autouse=True)
def _run_not_this_process_to_mark(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run a test started is not marked as pytest exits (console/heartbeats.py `_exiting`),
    when its database is gone."""
    monkeypatch.setattr(heartbeats, "_pid", None)


def _worker() -> SimpleNamespace:
    """What worker_ready and worker_shutdown hand their receivers: the parts they read."""
    return SimpleNamespace(
        hostname=HOSTNAME, app=SimpleNamespace(amqp=SimpleNamespace(queues=SimpleNamespace(consume_from={"jobs": None}))),
        controller=SimpleNamespace(concurrency=2),
        # Its main loop's timer: no test here runs for the LOOP_STALLED_AFTER_SECONDS after which
        # an unmarked loop stops the beats (tests/console/test_heartbeat_broker.py).
        timer=SimpleNamespace(call_repeatedly=lambda seconds, fun: None),
    )


def _started(worker: Any) -> WorkerHeartbeat:
    """Start the worker's reporting; its row once the first beat is written."""
    heartbeats.worker_started(sender=worker)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row = WorkerHeartbeat.objects.filter(hostname=HOSTNAME).first()
        if row is not None:
            return row
        time.sleep(0.05)
    raise AssertionError("the first heartbeat was not written")


def _console_row() -> list[str]:
    """The worker's row in the console's workers section, as a staff user sees it."""
    browser = BrowserClient()
    browser.force_login(User.objects.get_or_create(username="operator", is_staff=True, is_superuser=True)[0])
    return row_of(section(browser.get("/console/?fragment=1").content.decode(), "workers"), HOSTNAME)


def _clock_of_its_host(monkeypatch: pytest.MonkeyPatch, skew: timedelta) -> None:
    """The worker's host's clock `skew` off the database's (and this test's)."""
    monkeypatch.setattr(heartbeats, "timezone", SimpleNamespace(now=lambda: timezone.now() + skew))


def test_a_worker_shutting_down_marks_its_own_run_stopped() -> None:
    worker = _worker()
    _started(worker)

    heartbeats.worker_stopping(sender=worker)

    assert WorkerHeartbeat.objects.get(hostname=HOSTNAME).stopped_at is not None


def test_a_worker_shutting_down_leaves_a_newer_run_of_its_name_up() -> None:
    # Given a worker that has reported, and then a newer run of the same name (a restarted
    # container reusing it while the old one shuts down)
    worker = _worker()
    _started(worker)
    newer = timezone.now()
    services.worker_seen(hostname=HOSTNAME, queues=["jobs"], concurrency=2, pid=4343, started_at=newer)

    # When the old run shuts down
    heartbeats.worker_stopping(sender=worker)

    # Then the newer run's row is not marked
    row = WorkerHeartbeat.objects.get(hostname=HOSTNAME)
    assert (row.started_at, row.stopped_at) == (newer, None)


def test_an_older_run_shutting_down_leaves_a_newer_run_of_its_name_up_after_its_last_beat() -> None:
    # Given a worker that has reported, and a newer run of the same name reporting since
    older = _started(_worker())
    newer = timezone.now()
    services.worker_seen(hostname=HOSTNAME, queues=["jobs"], concurrency=2, pid=4343, started_at=newer)

    # When the old run's last beat lands just before its shutdown mark
    services.worker_seen(hostname=HOSTNAME, queues=["jobs"], concurrency=2, pid=older.pid,
                         started_at=older.started_at)
    heartbeats.worker_stopping(sender=_worker())

    # Then the row is still the newer run's, up
    row = WorkerHeartbeat.objects.get(hostname=HOSTNAME)
    assert (row.started_at, row.pid, row.stopped_at) == (newer, 4343, None)


def test_an_older_run_takes_the_row_back_once_the_newer_run_is_lost() -> None:
    # Given two runs of one name, the newer one not heard from for longer than a worker is lost after
    run = {"hostname": HOSTNAME, "queues": ["jobs"], "concurrency": 2}
    now = timezone.now()
    older, newer = now - timedelta(hours=1), now - timedelta(minutes=10)
    services.worker_seen(**run, pid=4343, started_at=newer)
    WorkerHeartbeat.objects.filter(hostname=HOSTNAME).update(seen_at=Now() - timedelta(seconds=LOST_AFTER_SECONDS + 1))

    # When the older run beats
    services.worker_seen(**run, pid=4242, started_at=older)

    # Then the row is the older run's: the name's worker is up
    row = WorkerHeartbeat.objects.get(hostname=HOSTNAME)
    assert (row.started_at, row.pid) == (older, 4242)
    assert _console_row()[1] == "up"


def test_while_the_database_is_out_of_reach_the_heartbeat_says_so_in_one_line_a_minute(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Given beats that cannot be written (the driver's message runs on over several lines)
    def unreachable(**kwargs: Any) -> None:
        raise OperationalError('connection to server at "10.0.0.5", port 5432 failed: Connection refused\n'
                               "\tIs the server running on that host and accepting TCP/IP connections?")

    monkeypatch.setattr(services, "worker_seen", unreachable)
    monkeypatch.setattr(heartbeats, "_unrecorded", log_volume.Occasional(logging.getLogger(heartbeats.__name__)))
    stopped = threading.Event()
    stopped.set()  # each _beat call writes once and returns
    monkeypatch.setattr(heartbeats, "_stop", stopped)
    heartbeats._loop_marked()  # its consumer running

    # When the worker beats three times
    with caplog.at_level(logging.WARNING, logger=heartbeats.__name__):
        for _ in range(3):
            heartbeats._beat(hostname=HOSTNAME, queues=["jobs"], concurrency=2, started_at=timezone.now())

    # Then the log has one line naming the worker and the driver's first line, with no traceback
    line = f'Could not record the heartbeat of {HOSTNAME}: connection to server at "10.0.0.5", port 5432 failed: '
    assert [(r.getMessage(), r.exc_info) for r in caplog.records] == [(line + "Connection refused", None)]


def test_a_worker_on_a_host_whose_clock_runs_behind_is_up(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a worker on a host whose clock runs 10 minutes behind the database's
    _clock_of_its_host(monkeypatch, -timedelta(minutes=10))
    worker = _worker()

    # When it has reported
    _started(worker)

    # Then the console shows it up, heard from just now: its queues have a consumer (the
    # "no consumer" alert's jobapi_queue_consumers counts the workers up), not one lost
    try:
        row = _console_row()
        assert (row[1], row[-1]) in {("up", "0 s ago"), ("up", "1 s ago")}, row
    finally:
        heartbeats.worker_stopping(sender=worker)


def test_a_worker_just_started_on_a_host_whose_clock_runs_behind_is_up_for_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a worker on a host whose clock runs 10 minutes behind the database's
    _clock_of_its_host(monkeypatch, -timedelta(minutes=10))
    worker = _worker()

    # When it has just started and reported
    _started(worker)

    # Then the console shows it up for seconds, not for the 10 minutes its clock is behind
    try:
        assert _console_row()[-2] in {"0 s", "1 s"}, _console_row()
    finally:
        heartbeats.worker_stopping(sender=worker)


def test_a_run_is_up_since_its_first_beat_and_a_restart_since_its_own() -> None:
    # Given a run whose first beat the database recorded 5 minutes ago
    run = {"hostname": HOSTNAME, "queues": ["jobs"], "concurrency": 2, "pid": 4242}
    started = timezone.now()
    services.worker_seen(**run, started_at=started)
    WorkerHeartbeat.objects.filter(hostname=HOSTNAME).update(up_since=Now() - timedelta(minutes=5))

    # When it beats again, it is still up for 5 minutes
    services.worker_seen(**run, started_at=started)
    assert _console_row()[-2].startswith("5 min"), _console_row()

    # When the worker restarts (a new run of its name) and reports, it is up for seconds
    services.worker_seen(**{**run, "pid": 4343}, started_at=timezone.now())
    assert _console_row()[-2] in {"0 s", "1 s"}, _console_row()


def test_a_run_reported_before_up_since_was_kept_is_up_since_its_start() -> None:
    # Given the row of a worker not yet upgraded, which started 5 minutes ago by its clock
    services.worker_seen(hostname=HOSTNAME, queues=["jobs"], concurrency=2, pid=4242,
                         started_at=timezone.now() - timedelta(minutes=5))
    WorkerHeartbeat.objects.filter(hostname=HOSTNAME).update(up_since=None)

    # Then the console counts its time up from its start, as it did
    assert _console_row()[-2].startswith("5 min"), _console_row()


def test_a_worker_on_a_host_whose_clock_runs_ahead_is_lost_once_it_is_silent(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a worker on a host whose clock runs 10 minutes ahead of the database's, that has
    # reported, and a worker taken for lost after 1 s of silence rather than 30
    _clock_of_its_host(monkeypatch, timedelta(minutes=10))
    monkeypatch.setattr(selectors, "LOST_AFTER_SECONDS", 1)
    _started(_worker())

    # When it dies: its beats stop, with no shutdown mark
    heartbeats._stop.set()
    assert heartbeats._thread is not None
    heartbeats._thread.join()
    time.sleep(1.5)

    # Then the console shows it lost, rather than up until its host's clock catches up
    assert _console_row()[1] == "lost"
