"""A job worker's soft stop (SIGQUIT, compose's stop_signal) that ends as soon as its running
jobs do, within WORKER_SOFT_SHUTDOWN_SECONDS, rather than after all of them.

Celery's own soft stop (worker_soft_shutdown_timeout, 5.5+) sleeps that long in the SIGQUIT
handler whenever a task is running, however soon it ends: its wait_for_soft_shutdown is a plain
sleep() in the main process, whose event loop, the one thing that learns a pool process finished
its task, is the thread it blocks (celery/celery#9505 shows the same). A compose worker running
any job took the full 90 s to stop at every deploy.

Here SIGQUIT only notes the stop. The event loop runs on: the worker stops taking messages at
once, its running jobs end, and their results and acknowledgements are handled as usual. Once no
job runs, or at the deadline, the worker calls Celery's own SIGQUIT handler (its cold shutdown,
with no soft time left to sleep), which hands back to the broker what still runs. A second
SIGQUIT meanwhile stops it at once.

A worker with no soft time (0, the default: the deliveries worker's) or no event loop (Celery
runs one on a broker it can poll, Redis or RabbitMQ, whatever the pool) keeps Celery's own stop.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from celery import platforms
from celery.utils.log import get_logger
from celery.worker import state

logger = get_logger(__name__)

# How often the event loop looks whether the stop began and its jobs ended, in seconds.
CHECK_SECONDS = 0.2
# Seconds without such a look after which SIGQUIT finds the loop not turning (the worker is
# reconnecting to the broker, which blocks it) and stops at once, as Celery's handler would.
LOOP_STILL_SECONDS = 2.0


class _SoftStop:
    """The stop's state, between SIGQUIT's handler and the event loop's look every CHECK_SECONDS.

    The handler only notes the time: it runs between two steps of the main thread, perhaps while
    that thread holds the event loop's locks, so it may not schedule anything on the loop."""

    def __init__(self, consumer: Any, seconds: float, cold_stop: Callable[..., None]) -> None:
        self.consumer, self.seconds, self.cold_stop = consumer, seconds, cold_stop
        self.deadline: float | None = None  # time.monotonic() the stop must end by, once it began
        self.stage = "running"  # then "waiting" (taking no more messages), then "stopped"
        self.looked = time.monotonic()  # the loop's last look

    def signalled(self, *args: Any) -> None:
        """SIGQUIT's handler."""
        if self.deadline is None and time.monotonic() - self.looked < LOOP_STILL_SECONDS:
            self.deadline = time.monotonic() + self.seconds
        elif self.stage != "stopped":  # a second SIGQUIT, or a loop that is not turning: at once
            self.deadline = 0.0
            if time.monotonic() - self.looked >= LOOP_STILL_SECONDS:
                self.stop()

    def look(self) -> None:
        """The event loop's look, every CHECK_SECONDS."""
        self.looked = time.monotonic()
        if self.deadline is None or self.stage == "stopped":
            return
        if self.stage == "running":
            # Take no more messages while the running jobs end (in Celery's soft stop, its loop,
            # blocked, took none either; its cold shutdown then stops consuming).
            self.stage = "waiting"
            logger.warning("Soft shutdown: waiting up to %s s for the %s running task(s) to end",
                           self.seconds, len(state.active_requests))
            try:
                self.consumer.task_consumer.cancel()
            except Exception:  # the broker gone: the cold shutdown copes with it as it would have
                logger.warning("Soft shutdown: could not stop consuming", exc_info=True)
        if not state.active_requests or time.monotonic() >= self.deadline:
            self.stop()

    def stop(self) -> None:
        """Celery's own SIGQUIT handler: its cold shutdown hands back to the broker what still runs."""
        self.stage = "stopped"
        self.cold_stop(platforms.signals.signum("SIGQUIT"), None)


def soft_stop_install(sender: Any = None, **kwargs: Any) -> None:
    """worker_ready (sender: the worker's consumer): take SIGQUIT over from Celery's handler,
    which is called once the running jobs have ended or the soft time is up."""
    consumer = sender
    hub = getattr(consumer, "hub", None)
    conf = consumer.app.conf
    seconds = float(conf.worker_soft_shutdown_timeout or 0)
    if hub is None or seconds <= 0:
        return  # no event loop to wait in, or no soft time: Celery's stop as it is
    stop = _SoftStop(consumer, seconds, platforms.signals["SIGQUIT"])
    # Celery's handler, called once the jobs are done (or the time is up), must not sleep again.
    conf.worker_soft_shutdown_timeout = 0.0
    platforms.signals["SIGQUIT"] = stop.signalled
    # Registered after the loop's own timers (worker_ready comes once they are), so a reconnection
    # to the broker, which cancels those, leaves this one.
    hub.call_repeatedly(CHECK_SECONDS, stop.look)
