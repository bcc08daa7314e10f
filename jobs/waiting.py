"""Waiting on jobs without holding a database connection: `Prefer: wait` and the event streams'
blocking step, and finding the client's socket so a client that hangs up frees its wait."""
from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Mapping
from typing import Any

from django.conf import settings

from core.concurrency import connections_trim, turn_released
from core.models import Client
from jobs import selectors
from jobs.models import Job
from jobs.wakeups import Waiter, hub


class ClientGone(Exception):
    """The client hung up while it waited."""


def client_socket(meta: Mapping[str, Any]) -> socket.socket | None:
    """The request's client socket (from its META), to notice a hang-up while waiting: gunicorn
    hands it over in the WSGI environ. Other servers (Django's development server) do not; there a hang-up is
    noticed at the wait's end, or when a stream next writes (its heartbeat)."""
    sock = meta.get("gunicorn.socket")
    return sock if isinstance(sock, socket.socket) else None


# Why a wait is refused: the process's room is full, or the client's share of it.
SERVER_FULL = "server"
CLIENT_FULL = "client"


def room_refused(client_id: uuid.UUID) -> str:
    """Why this process may take no more waiters of the client's, or "" when it may:
    SERVER_FULL past API_MAX_WAITERS_PER_PROCESS (its threads would all wait and none be left
    for short requests), CLIENT_FULL past the client's API_MAX_WAITERS_PER_CLIENT (so that one
    client's waits and streams leave room for everyone else's)."""
    return _room_refused(*hub.waiting(client_id))


def _room_refused(everyone: int, its_own: int) -> str:
    if everyone >= settings.API_MAX_WAITERS_PER_PROCESS:
        return SERVER_FULL
    if its_own >= settings.API_MAX_WAITERS_PER_CLIENT:
        return CLIENT_FULL
    return ""


def waiter_placed(*, client_id: uuid.UUID, job_id: uuid.UUID | None = None,
                  owner_id: uuid.UUID | None = None, final_only: bool = False) -> tuple[Waiter | None, str]:
    """A waiter, registered now if the room has a place for it (room_refused's rule, checked and
    taken at once), else (None, why not). Checked first and taken after, the place went to each
    of a client's requests that ran between the two, past its share: a stream's body runs after
    its view has given back the request's turn, and requests run side by side when a process
    has more than one turn (WEB_ACTIVE_REQUESTS). Give it back with waiter_release."""
    waiter = Waiter(client_id=client_id, job_id=job_id, owner_id=owner_id, final_only=final_only)
    refused = hub.register(waiter, room=_room_refused)
    if refused:
        waiter.close()
        return None, refused
    return waiter, ""


def waiter_release(waiter: Waiter) -> None:
    hub.unregister(waiter)
    waiter.close()


def idle(waiter: Waiter, timeout: float, client: socket.socket | None) -> str:
    """Block on `waiter` without the request's turn to run and, once the process holds more
    than a few database connections, without one (core.concurrency: a waiting thread must not
    pin one of PostgreSQL's few, 500 waiters would take 500; the next query opens one again)."""
    connections_trim()
    with turn_released():
        return waiter.wait(timeout, client)


def job_wait(*, owner: Client, job: Job, seconds: float, client: socket.socket | None) -> Job | None:
    """The job once it is final, or as it is after `seconds` or when the process begins to stop
    (jobs.wakeups: it would exit before the wait ends); None when the process's room has no
    place for the wait (room_refused). Raises ClientGone."""
    deadline = time.monotonic() + seconds
    # Registered before the job is read again, so that an event between the read and the wait
    # still wakes it.
    waiter, _ = waiter_placed(client_id=owner.pk, job_id=job.id, final_only=True)
    if waiter is None:
        return None
    try:
        job = selectors.job_get(owner=owner, job_id=job.id)  # it may have ended before we registered
        while not job.is_final:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            outcome = idle(waiter, remaining, client)
            if outcome == "gone":
                raise ClientGone()
            job = selectors.job_get(owner=owner, job_id=job.id)
            if outcome == "stopping":
                break
    finally:
        waiter_release(waiter)
    return job
