"""Each Celery worker reports itself every HEARTBEAT_SECONDS (console/services.py) in a row of
its own (its name, queues, processes), from a thread of its main process, and marks the row on a
clean shutdown: warm (worker_shutdown) or cold (SIGQUIT, compose's stop_signal for the job
workers: Celery sends no worker_shutdown then, so the main process marks it as it exits).

Why a row rather than Celery's own heartbeats: those are events (off here: `--without-gossip`,
no `-E`, for their cost per task) kept in the memory of whoever listens, like Flower; a row
outlives every restart, so the console shows a worker that vanished as lost, and /metrics
counts each queue's consumers (jobapi_queue_consumers) for the "no consumer" alert.
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
from datetime import datetime
from typing import Any

from celery.signals import worker_ready, worker_shutdown
from django.db import DatabaseError, connection
from django.utils import timezone

from console import services
from core import logs

logger = logging.getLogger(__name__)

# While the database is out of reach, one line a minute rather than a traceback every beat.
_unrecorded = logs.Occasional(logger)
_stop = threading.Event()
_thread: threading.Thread | None = None
# When this process's worker run started: its heartbeats and its shutdown mark name the run by it.
# By this host's clock; the beats, the mark and its time up are stamped by the database's
# (services.worker_seen).
_started_at: datetime | None = None
# The run's worker name, and its main process (a pool process forked from it inherits this module's
# state, and must not mark the run stopped as it exits).
_hostname: str | None = None
_pid: int | None = None


def _beat(*, hostname: str, queues: list[str], concurrency: int, started_at: datetime) -> None:
    while True:
        try:
            services.worker_seen(hostname=hostname, queues=queues, concurrency=concurrency, pid=os.getpid(),
                                 started_at=started_at)
        except DatabaseError as exc:
            _unrecorded.warning("Could not record the heartbeat of %s: %s", hostname, logs.first_line(exc))
        finally:
            # No connection is left open between beats: a pool process forked meanwhile would
            # inherit its socket, and closing its copy would end the server's session.
            connection.close()
        if _stop.wait(services.HEARTBEAT_SECONDS):
            return


@worker_ready.connect
def worker_started(sender: Any = None, **kwargs: Any) -> None:
    """worker_ready (sender: the worker's consumer): start reporting."""
    global _thread, _started_at, _hostname, _pid
    queues = sorted(sender.app.amqp.queues.consume_from)
    concurrency = getattr(sender.controller, "concurrency", 0) or 0
    _stop.clear()
    _started_at = timezone.now()
    _hostname, _pid = sender.hostname, os.getpid()
    _thread = threading.Thread(
        target=_beat, kwargs={"hostname": sender.hostname, "queues": queues, "concurrency": concurrency,
                              "started_at": _started_at},
        name="worker-heartbeat", daemon=True,
    )
    _thread.start()


@worker_shutdown.connect
def worker_stopping(sender: Any = None, **kwargs: Any) -> None:
    """worker_shutdown (sender: the worker, on a warm shutdown): stop reporting, and say so."""
    _stopped(sender.hostname)


@atexit.register
def _exiting() -> None:
    """A cold shutdown (SIGQUIT: compose stops the job workers so) ends the worker without
    worker_shutdown: its row stayed up for LOST_AFTER_SECONDS after it exited, a consumer of its
    queues that was gone, then showed it lost, in red, after every deploy. Its main process
    marks it as it exits instead (a no-op after a warm shutdown's mark, and in every other
    process)."""
    if _pid == os.getpid() and _hostname is not None:
        _stopped(_hostname)


def _stopped(hostname: str) -> None:
    """Stop reporting, and say so once the last beat is written (a beat that lands after the mark
    changes nothing either: services.worker_seen). Once a run: the mark is made."""
    global _thread
    _stop.set()
    if _thread is None or _started_at is None:
        return  # never ready (or marked): this run reported nothing, and another run's row is not its to mark
    # Its first beat, if it is still being written, makes the row the mark updates.
    _thread.join(timeout=services.HEARTBEAT_SECONDS)
    _thread = None
    try:
        services.worker_stopped(hostname=hostname, started_at=_started_at)
    except DatabaseError:
        logger.warning("Could not record the shutdown of %s", hostname, exc_info=True)
    finally:
        connection.close()
