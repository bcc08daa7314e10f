"""Each Celery worker reports itself every HEARTBEAT_SECONDS (console/services.py) in a row of
its own (its name, queues, processes), from a thread of its main process, and marks the row on a
clean shutdown: warm (worker_shutdown) or cold (SIGQUIT, compose's stop_signal for the job
workers: Celery sends no worker_shutdown then, so the main process marks it as it exits).

A worker is reported up only while its consumer runs: its main loop marks itself every
LOOP_MARK_SECONDS (an entry on its timer), and a beat that finds no mark for
LOOP_STALLED_AFTER_SECONDS writes nothing, so the worker shows lost once it is LOST_AFTER_SECONDS
silent. The thread alone kept the row up whatever the consumer did: a worker cut off from the
broker (Redis down, or out of its host's reach), retrying to connect and consuming nothing, was
up on the console and a consumer of its queues in /metrics for as long, so QueueWithoutConsumer
never fired.

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
import time
from datetime import datetime
from typing import Any

from celery.signals import worker_ready, worker_shutdown, worker_shutting_down
from django.db import DatabaseError, connection
from django.utils import timezone

from console import services
from core import log_volume
from core.log_database_errors import first_line

logger = logging.getLogger(__name__)

# How often the worker's main loop marks itself running (s), and how long without a mark a beat
# takes its consumer for stopped (s): a connection to the broker lost and retried, a loop stuck.
LOOP_MARK_SECONDS = 1.0
LOOP_STALLED_AFTER_SECONDS = services.HEARTBEAT_SECONDS

# While the database is out of reach, one line a minute rather than a traceback every beat.
_unrecorded = log_volume.Occasional(logger)
# Likewise while the consumer does not run (Celery logs each of its tries to reconnect too).
_not_consuming = log_volume.Occasional(logger)
# When the main loop last marked itself (time.monotonic()).
_loop_marked_at = 0.0
# Set once the worker is stopping: it finishes what it runs, its loop not necessarily running.
_finishing = threading.Event()
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


def _loop_marked() -> None:
    """A timer entry of the worker's main loop: it runs only while the loop does."""
    global _loop_marked_at
    _loop_marked_at = time.monotonic()


def _consuming(hostname: str) -> bool:
    """Whether the worker's main loop has run lately (its consumer connected and consuming), or
    the worker, stopping, finishes its tasks."""
    silent_for = time.monotonic() - _loop_marked_at
    if silent_for <= LOOP_STALLED_AFTER_SECONDS or _finishing.is_set():
        return True
    _not_consuming.warning("Worker %s not reported up: its consumer has not run for %.0f s (the broker out of "
                           "reach, or its main loop stuck)", hostname, silent_for)
    return False


def _beat(*, hostname: str, queues: list[str], concurrency: int, started_at: datetime) -> None:
    while True:
        if _consuming(hostname):
            try:
                services.worker_seen(hostname=hostname, queues=queues, concurrency=concurrency, pid=os.getpid(),
                                     started_at=started_at)
            except DatabaseError as exc:
                _unrecorded.warning("Could not record the heartbeat of %s: %s", hostname, first_line(exc))
            finally:
                # No connection is left open between beats: a pool process forked meanwhile would
                # inherit its socket, and closing its copy would end the server's session.
                connection.close()
        if _stop.wait(services.HEARTBEAT_SECONDS):
            return


@worker_ready.connect
def worker_started(sender: Any = None, **kwargs: Any) -> None:
    """worker_ready (sender: the worker's consumer): start reporting, while its main loop runs
    (its timer: the event loop's, which runs only while the consumer is connected; a thread of
    its own where the transport has no event loop, the embedded broker's)."""
    global _thread, _started_at, _hostname, _pid
    queues = sorted(sender.app.amqp.queues.consume_from)
    concurrency = getattr(sender.controller, "concurrency", 0) or 0
    _loop_marked()
    sender.timer.call_repeatedly(LOOP_MARK_SECONDS, _loop_marked)
    _finishing.clear()
    _stop.clear()
    _started_at = timezone.now()
    _hostname, _pid = sender.hostname, os.getpid()
    _thread = threading.Thread(
        target=_beat, kwargs={"hostname": sender.hostname, "queues": queues, "concurrency": concurrency,
                              "started_at": _started_at},
        name="worker-heartbeat", daemon=True,
    )
    _thread.start()


@worker_shutting_down.connect
def worker_finishing(**kwargs: Any) -> None:
    """worker_shutting_down (a stop signal received): the worker still reports itself, as its
    queues' consumer for the tasks it finishes, until it marks itself stopped. A thread pool's
    warm stop waits for its threads in the main loop, which marks itself no more meanwhile: the
    deliveries worker finishing a batch showed lost."""
    _finishing.set()


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
