"""Waking the API's waiting requests (`Prefer: wait`, event streams) when a job has a new event.

The worker that commits a job's event publishes one short Redis message (`<job id> <owner id>
<event type>`); each API process runs ONE listener thread subscribed to that channel, which
wakes the requests of that process waiting on that job or owner through a pipe each. A waiting
request blocks in `poll()` on its pipe and on its client's socket, so it costs no CPU, no
database query and no Redis connection while it waits, and notices a client that hangs up at
once. Without Redis (the embedded mode) the listener reads the event log instead, one query per
process every half second, whatever the number of waiters.

A message lost (Redis restarting) is made good when the listener reconnects: it wakes every
waiter of its process, and each reads the database again. When the process begins a graceful
stop (gunicorn.conf.py), `hub.stop()` has every waiter, and every one that starts afterwards,
answer at once: the process exits when its requests end, and a wait still blocked then would get
no answer at all. See docs/streams.md.
"""
from __future__ import annotations

import logging
import os
import select
import socket
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable

import redis
from django.conf import settings
from django.db import close_old_connections, connection

from jobs.models import FINAL_WEBHOOK_EVENTS, JobEvent

logger = logging.getLogger(__name__)

# The embedded mode's poll of the event log (one query per process, not per waiter).
EMBEDDED_POLL_SECONDS = 0.5
# How long the listener waits before connecting to Redis again after losing it.
RECONNECT_SECONDS = 1.0
# The longest single poll() of a wait: poll() takes at most 2**31 - 1 ms (24.8 days) and raises
# OverflowError past it; a longer wait polls again.
POLL_MAX_SECONDS = 24 * 3600.0


def redis_url() -> str:
    """The Redis the wake-ups go through: the broker's, else the cache's; "" without one."""
    for url in (settings.CELERY_BROKER_URL, settings.CACHE_URL):
        if url.startswith(("redis://", "rediss://")):
            return str(url)
    return ""


def channel() -> str:
    # Under the broker's key prefix, so test runs (and stacks sharing a Redis) stay apart.
    prefix = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}).get("global_keyprefix", "")
    return f"{prefix}jobapi:job-events"


_publisher: redis.Redis | None = None


def job_event_publish(*, job_id: uuid.UUID, owner_id: uuid.UUID, event_type: str) -> None:
    """Tell every API process the job has a new committed event (call after commit). Best
    effort: when Redis is down the waiters answer at their timeout, from the database."""
    global _publisher
    url = redis_url()
    if not url:
        return  # embedded: the listeners read the event log
    try:
        if _publisher is None:
            _publisher = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        _publisher.publish(channel(), f"{job_id} {owner_id} {event_type}")
    except redis.RedisError:
        logger.warning("job event wake-up not published", extra={"job_id": str(job_id)})


class Waiter:
    """One waiting request: woken through its own pipe by the listener; watches its client."""

    def __init__(self, *, client_id: uuid.UUID, job_id: uuid.UUID | None = None,
                 owner_id: uuid.UUID | None = None, final_only: bool = False) -> None:
        # Who waits (its share of the process's room: jobs.waiting); what for: a job, or every
        # job of an owner.
        self.client_id = str(client_id)
        self.job_id = str(job_id) if job_id else None
        self.owner_id = str(owner_id) if owner_id else None
        # Only a final event wakes it (a `Prefer: wait`): progress passes it by.
        self.final_only = final_only
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._woken = False
        # Its process is stopping: waiting on would outlast it.
        self._stopped = False
        # The client socket a stream's chunk is being written to now (jobs.streams.Placed).
        self.writing_to: socket.socket | None = None

    def wake(self, event_type: str | None = None) -> None:
        """From the listener: `event_type` None means "something may have been missed"."""
        if self.final_only and event_type is not None and event_type not in FINAL_WEBHOOK_EVENTS:
            return
        if not self._woken:
            self._woken = True
            try:
                os.write(self._write, b"x")
            except (BlockingIOError, OSError):
                pass

    def stop(self) -> None:
        """Its process is stopping: end the wait under way and every later one at once, and a
        stream's write under way: shut down, the write fails at once. A write blocks for as long
        as its client reads nothing (up to API_STREAM_WRITE_TIMEOUT_SECONDS, twice that for a
        send that sent part of its chunk): its thread held the process's stop until
        graceful_timeout killed it. The client has every message it read whole, and resumes
        from the last one's id, as from a stream that ended with its `id:`."""
        self._stopped = True
        try:
            os.write(self._write, b"x")
        except (BlockingIOError, OSError):
            pass
        writing_to = self.writing_to
        if writing_to is not None:
            try:
                writing_to.shutdown(socket.SHUT_RDWR)
            except OSError:  # closed or reset already
                pass

    def wait(self, timeout: float, client: socket.socket | None = None) -> str:
        """Block up to `timeout` seconds: "event" when woken, "gone" when the client hung up,
        "stopping" when its process stops, else "timeout"."""
        deadline = time.monotonic() + timeout
        while True:
            if self._stopped:
                return "stopping"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout"
            # poll(), not select(): select() takes no descriptor numbered past 1023 (FD_SETSIZE),
            # and a process holding many connections hands its waits such sockets.
            poller = select.poll()
            poller.register(self._read, select.POLLIN)
            client_fd = client.fileno() if client is not None else None
            try:
                if client_fd is not None:
                    poller.register(client_fd, select.POLLIN)
                ready = {fd for fd, _ in poller.poll(min(remaining, POLL_MAX_SECONDS) * 1000)}
            except (OSError, ValueError):  # the client's socket closed under us
                return "gone"
            if self._read in ready:
                os.read(self._read, 64)
                self._woken = False
                return "stopping" if self._stopped else "event"
            # Any event on the socket (data, hang-up, error, a descriptor closed under us): look.
            if client is not None and client_fd in ready:
                if _hung_up(client):
                    return "gone"
                client = None  # it sent its next request already (pipelining): stop watching

    def ended(self, client: socket.socket | None = None) -> str:
        """What `wait` would answer at once, without waiting or taking a wake-up: "stopping",
        "gone", else "" (a stream catching up, between two reads)."""
        if self._stopped:
            return "stopping"
        return "gone" if client is not None and _hung_up(client) else ""

    def close(self) -> None:
        os.close(self._read)
        os.close(self._write)


def _hung_up(client: socket.socket) -> bool:
    try:
        return client.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


class Hub:
    """This process's waiters, by job and by owner, and the listener thread that wakes them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_job: dict[str, set[Waiter]] = defaultdict(set)
        self._by_owner: dict[str, set[Waiter]] = defaultdict(set)
        self._of_client: Counter[str] = Counter()
        self._pid = 0
        # Set once by stop(): the process is stopping, no waiter is to wait any more.
        self.stopping = False
        # How many times the listener (re)subscribed: tests wait for it.
        self.subscriptions = 0

    def waiting(self, client_id: uuid.UUID) -> tuple[int, int]:
        """How many wait in this process: all, and `client_id`'s."""
        with self._lock:
            return self._of_client.total(), self._of_client[str(client_id)]

    def register(self, waiter: Waiter, *, room: Callable[[int, int], str]) -> str:
        """Add `waiter`, unless `room(waiters of the process, waiters of its client)` names a
        reason not to, which it returns (else ""): counted and added under one lock, so two
        requests cannot both take the last place."""
        self._ensure_listener()
        with self._lock:
            refused = room(self._of_client.total(), self._of_client[waiter.client_id])
            if refused:
                return refused
            if waiter.job_id:
                self._by_job[waiter.job_id].add(waiter)
            if waiter.owner_id:
                self._by_owner[waiter.owner_id].add(waiter)
            self._of_client[waiter.client_id] += 1
        if self.stopping:  # after adding it: stop() either sees it or has set this already
            waiter.stop()
        return ""

    def unregister(self, waiter: Waiter) -> None:
        with self._lock:
            for index, key in ((self._by_job, waiter.job_id), (self._by_owner, waiter.owner_id)):
                if key and key in index:
                    index[key].discard(waiter)
                    if not index[key]:
                        del index[key]
            self._of_client[waiter.client_id] -= 1
            if not self._of_client[waiter.client_id]:
                del self._of_client[waiter.client_id]

    def deliver(self, job_id: str, owner_id: str, event_type: str | None) -> None:
        with self._lock:
            waiters = [*self._by_job.get(job_id, ()), *self._by_owner.get(owner_id, ())]
        for waiter in waiters:
            waiter.wake(event_type)

    def wake_all(self) -> None:
        for waiter in self._all():
            waiter.wake(None)

    def stop(self) -> None:
        """The process begins a graceful stop: every waiter answers now with what it has (a
        `Prefer: wait` the job as it is, a stream ends and its client resumes elsewhere with
        `Last-Event-ID`), and so does every waiter registered from now on."""
        self.stopping = True
        for waiter in self._all():
            waiter.stop()

    def _all(self) -> set[Waiter]:
        with self._lock:
            return {w for index in (self._by_job, self._by_owner) for ws in index.values() for w in ws}

    def _ensure_listener(self) -> None:
        # Started in the process that serves (after gunicorn's fork), once.
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            target = self._listen if redis_url() else self._poll
            threading.Thread(target=target, name="job-event-listener", daemon=True).start()

    def _listen(self) -> None:
        url = redis_url()
        while True:
            try:
                client = redis.Redis.from_url(url, socket_connect_timeout=2, health_check_interval=30)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(channel())
                self.subscriptions += 1
                self.wake_all()  # anything published while it was not subscribed: read again
                for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    parts = message["data"].decode().split(" ")
                    if len(parts) == 3:
                        self.deliver(parts[0], parts[1], parts[2])
            except Exception:  # any failure: reconnect; the waiters fall back on their timeouts
                logger.warning("job event listener lost Redis; reconnecting", exc_info=True)
                time.sleep(RECONNECT_SECONDS)

    def _poll(self) -> None:
        last = None
        while True:
            try:
                close_old_connections()
                if last is None:
                    last = JobEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
                    self.subscriptions += 1
                for event_id, job_id, owner_id, event_type in JobEvent.objects.filter(id__gt=last).order_by(
                    "id"
                ).values_list("id", "job_id", "owner_id", "event_type")[:1000]:
                    last = event_id
                    self.deliver(str(job_id), str(owner_id), event_type)
            except Exception:
                logger.warning("job event poll failed", exc_info=True)
                connection.close()
            time.sleep(EMBEDDED_POLL_SECONDS)


hub = Hub()
