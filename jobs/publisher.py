"""The publisher: a thread of the worker that serves the `maintenance` queue, which takes the jobs
submissions handed over (jobs/dispatch.py) off their Redis list and publishes them.

It blocks on the list (BLPOP), so a job is published within a Redis round trip of its commit,
not on a poll; it then takes what else is waiting, up to BATCH, claims those jobs in one
statement and publishes each. A submission's CPU then goes to its insert, not to building and
sending a Celery message (docs/benchmarks.md). Run as many as there are such workers: the list
hands each id to one of them, and the claim skips a job the sweeper took first.

When Redis fails it waits a second and tries again (submissions publish from the request
meanwhile); when the database fails, the ids go back to the head of the list. It says it is
alive in Redis every second: with no publisher alive, submissions publish themselves.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis
from django.conf import settings
from django.db import close_old_connections

from core import cache_redis
from jobs import dispatch

logger = logging.getLogger(__name__)

# The most jobs taken off the list, claimed and published together.
BATCH = 200
# How long one BLPOP waits for an id before looking at the stop flag (seconds).
BLOCK_SECONDS = 0.5
# How often a publisher says it is alive (seconds), well within PUBLISHER_ALIVE_SECONDS.
ALIVE_EVERY_SECONDS = 1.0
# After a failure, the pause before trying again (seconds); the log says so once a minute.
RETRY_SECONDS = 1.0
_WARN_EVERY_SECONDS = 60.0


class Publisher:
    """One publishing thread: `start()` it; `stop()` ends it within BLOCK_SECONDS."""

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job-publisher", daemon=True)
        self._warned_at = -_WARN_EVERY_SECONDS

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        client = cache_redis.client()
        key, alive_key = dispatch.handover_key(), dispatch.publisher_alive_key()
        alive_said_at = float("-inf")
        while not self._stopping.is_set():
            try:
                if time.monotonic() - alive_said_at >= ALIVE_EVERY_SECONDS:
                    # Submissions hand their jobs over only while some publisher says this.
                    client.set(alive_key, 1, px=int(dispatch.PUBLISHER_ALIVE_SECONDS * 1000))
                    alive_said_at = time.monotonic()
                popped = client.blpop([key], timeout=BLOCK_SECONDS)
                if popped is None:
                    continue
                taken = [popped[1], *(client.lpop(key, BATCH - 1) or ())]
            except redis.RedisError as exc:
                self._warn("cannot read the handover list", exc)
                self._stopping.wait(RETRY_SECONDS)
                continue
            self.publish(client, key, taken)

    def publish(self, client: redis.Redis, key: str, taken: list[bytes]) -> None:
        """Claim and publish the jobs of `taken` (entries as Redis returns them)."""
        try:
            dispatch.jobs_publish_handed_over(handed=[dispatch.handover_parse(raw) for raw in taken])
        except Exception as exc:  # the database is down, most likely: the entries wait on the list again
            self._warn("could not claim handed-over jobs; they go back on the list", exc)
            try:
                client.lpush(key, *reversed(taken))
            except redis.RedisError:
                pass  # the rows wait for dispatch: the sweeper publishes them
            self._stopping.wait(RETRY_SECONDS)
        finally:
            close_old_connections()  # as after a task: a connection that failed is not reused

    def _warn(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_SECONDS:
            self._warned_at = now
            logger.warning("Job publisher %s", what, exc_info=exc)


_publisher: Publisher | None = None


def worker_ready(sender: Any = None, **kwargs: Any) -> None:
    """worker_ready: start the publisher in a worker that serves the maintenance queue (where
    the sweeper runs too), when submissions hand their jobs over."""
    global _publisher
    queues = getattr(getattr(sender, "app", None), "amqp", None)
    consumed = set(queues.queues.consume_from) if queues is not None and queues.queues.consume_from else set()
    if settings.MAINTENANCE_QUEUE in consumed and dispatch.handover_configured() and _publisher is None:
        _publisher = Publisher()
        _publisher.start()


def worker_shutdown(**kwargs: Any) -> None:
    """worker_shutdown: let the publisher finish the batch it holds."""
    if _publisher is not None:
        _publisher.stop()
