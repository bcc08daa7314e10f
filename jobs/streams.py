"""Server-sent event streams of job events (`text/event-stream`): one job's, or every job of a
client's. Each message is one JobEvent: `event:` its type, `id:` its id, `data:` the webhook
body. A stream resumes after a `Last-Event-ID` without gaps (but a job's progress events a later
one replaced: jobs.event_log) or repeats, sends a `: heartbeat`
comment when idle, and ends with a job's final event (the one-job stream), when the client
hangs up, or when its process begins to stop (the client reconnects with `Last-Event-ID` and
loses nothing). Between events it holds no database connection (jobs.waiting).

A stream's body runs after its request gave its turn back (core/concurrency.py). Its reads, and
the rendering of what they read, take a turn again in the client's place, so that a client
replaying a long history on a dozen streams takes turns with other clients' requests rather
than running beside them; the writes to the client take none."""
from __future__ import annotations

import logging
import socket
import struct
import uuid
from collections.abc import Callable, Generator, Iterator
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import QuerySet

from core import logs
from core.concurrency import turn_taken
from core.errors import outage_of
from core.log_database_errors import first_line
from jobs import event_log
from jobs.models import FINAL_WEBHOOK_EVENTS, Job, JobEvent
from jobs.waiting import idle, waiter_release
from jobs.wakeups import Waiter

logger = logging.getLogger(__name__)

# Sent first: how long a client waits before reconnecting after a drop (milliseconds).
RECONNECT_MILLISECONDS = 1000
# The most events a stream reads at once while it catches up...
CATCH_UP_BATCH = 500
# ... and the most bytes of their bodies (but for a first event larger than it, read alone).
CATCH_UP_MAX_BYTES = 1024 * 1024
# The most of a client's events one read of its stream filtered by job name looks through.
SCAN_BATCH = 2000
# What a message needs of an event, read as plain rows: a batch of 500 read and rendered in
# 3.6 ms of CPU, against 14.3 ms as JobEvent objects.
SENT = ("id", "event_type", "body")


def message(event: Any) -> bytes:
    """One SSE message of an event (a JobEvent, or its SENT columns as a named row). The body is
    compact JSON: one line, no newline to escape."""
    return f"event: {event.event_type}\nid: {event.id}\ndata: {event.body}\n\n".encode()


def resume_point(after: int) -> bytes:
    """A message of an `id:` alone: it sets the client's Last-Event-ID and dispatches no event
    (the SSE rule), so a stream ended before it sent one of its own (a job not started yet, a
    client's events since it connected) still resumes from where it stood, nothing skipped."""
    return f"id: {after}\n\n".encode()


def resumed_from(after: int, last: int) -> int:
    """Where a stream resumed after `after` reads from, its job's or its client's latest event
    being `last`: an id past it is taken as it. An id a stream sent is never past it (an owner's
    events commit in the order of their ids: jobs.event_log), so no event that could still come
    lies between the two; taken as it was, a job's stream skipped every event to that id, its
    final one too, and never ended: 999999999999 held one of its client's places until the client
    hung up."""
    return min(after, last)


def last_event_id(value: str | None) -> int | None:
    """The `Last-Event-ID` (header, or `last_event_id` query parameter for clients that cannot
    set headers) as an event id; None when absent or not one of ours."""
    value = (value or "").strip()
    return int(value) if value.isascii() and value.isdigit() and len(value) < 19 else None


def writes_bounded(client: socket.socket | None) -> None:
    """A stream's client that accepts none of its bytes for API_STREAM_WRITE_TIMEOUT_SECONDS ends
    the stream: the server closes the connection and the response, and the stream's thread and
    its place in its client's share are free again. A client that reads slowly still gets
    everything; one that reads nothing (or whose connection is gone) used to hold both until it
    hung up, and a thread blocked writing to it never saw its process stop.

    Two documented socket options: SO_SNDTIMEO (socket(7)) makes a send() that could send nothing
    for that long fail, for a stream blocked writing; TCP_USER_TIMEOUT (tcp(7), Linux) closes the
    connection once what was sent stays unacknowledged, or the client's window shut, for that
    long, for a stream whose writes still fit in the buffers (idle, or a small catch-up): its wait
    then sees the connection gone (jobs.wakeups.Waiter.wait)."""
    seconds = settings.API_STREAM_WRITE_TIMEOUT_SECONDS
    if client is None or seconds <= 0:
        return
    whole = int(seconds)
    timeval = struct.pack("@ll", whole, int((seconds - whole) * 1_000_000))
    client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
    if client.family in (socket.AF_INET, socket.AF_INET6) and hasattr(socket, "TCP_USER_TIMEOUT"):
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(seconds * 1000))


def began_stopping(waiter: Waiter) -> bool:
    """Whether a stream's process began to stop before its body did (jobs.wakeups.Hub.register
    stops a waiter placed after that): it then reads nothing and ends with where its client
    stands, the stop's answer. Its first read (a job's history from its client's
    Last-Event-ID: up to CATCH_UP_MAX_BYTES in one batch) went out first, and to a client
    reading nothing that write blocked for up to API_STREAM_WRITE_TIMEOUT_SECONDS, holding the
    stop: the stop shuts down the socket of a write under way alone (Waiter.stop), not of one
    that starts after it."""
    return waiter.ended() == "stopping"


def job_stream_over(*, job: Job, after: int | None) -> bool:
    """Whether a job's stream resumed after `after` has nothing left to send: the job is final
    (its final event committed with its status) and no event of it follows `after`. EventSource
    reconnects by itself a second after the stream ends, with the final event's id: kept open,
    that stream waited for events that never come, holding one of its client's places for as long
    as the page stayed open."""
    return after is not None and job.is_final and not event_log.job_events_after(job_id=job.id, after_id=after).exists()


def job_event_stream(
    *, waiter: Waiter, job_id: uuid.UUID, after: int | None, client: socket.socket | None, turn_key: str,
    authorized: Callable[[], bool],
) -> Generator[bytes, None, None]:
    """One job of the owner's (its waiter's, placed: jobs.waiting.waiter_placed): its events
    after `after` when resuming, else its latest (its current state) and what follows; ends
    after the final one, or once `authorized()` (asked before each read after the first: its
    API key is still in force) is false. Its reads take a turn in `turn_key`'s place."""
    heartbeat = settings.API_STREAM_HEARTBEAT_SECONDS
    yield f"retry: {RECONNECT_MILLISECONDS}\n\n".encode()
    if began_stopping(waiter):
        yield resume_point(after or 0)
        return
    if after is None:
        with turn_taken(turn_key):
            latest = event_log.job_event_latest(job_id=job_id)
        events: list[Any] = [latest] if latest else []
        after, more = 0, False
    else:
        with turn_taken(turn_key):
            events, more = _batch(event_log.job_events_after(job_id=job_id, after_id=after))
            if not events:  # else `after` is before the latest already
                after = resumed_from(after, event_log.job_event_last_id(job_id=job_id))
    while True:
        for event in events:
            yield message(event)
            after = event.id
            if event.event_type in FINAL_WEBHOOK_EVENTS:
                connection.close()
                return
        # After a heartbeat it reads again too, as the clients' stream does: a wake-up lost (a
        # worker that died between its commit and the publish) delays an event by a heartbeat.
        sent, ends = _between_reads(waiter, heartbeat, client, after, more=more)
        if sent:
            yield sent
        if ends:
            return
        with turn_taken(turn_key):
            if not authorized():
                return
            events, more = _batch(event_log.job_events_after(job_id=job_id, after_id=after))


def _batch(events: QuerySet[JobEvent]) -> tuple[list[Any], bool]:
    """One read of a stream: the first of `events` (CATCH_UP_BATCH and CATCH_UP_MAX_BYTES at
    most: jobs.event_log.events_within) as named rows of their SENT columns, and whether it was
    cut short (more may follow at once). Each read of a job's stream was once its whole history,
    that of a job that ran an hour (3,600 progress events, each with the job's payload) 67 MB of
    Python objects with a 10,000-character message."""
    rows = list(event_log.events_within(events, count=CATCH_UP_BATCH, max_bytes=CATCH_UP_MAX_BYTES)
                .values_list(*SENT, "upto", named=True))
    return rows, bool(rows) and (len(rows) == CATCH_UP_BATCH or rows[-1].upto >= CATCH_UP_MAX_BYTES)


def owner_event_stream(
    *, waiter: Waiter, owner_id: uuid.UUID, after: int | None, job_name: str, client: socket.socket | None,
    turn_key: str, authorized: Callable[[], bool],
) -> Generator[bytes, None, None]:
    """Every event of the owner's jobs (of `job_name` only, when given; its waiter placed:
    jobs.waiting.waiter_placed): after `after` when resuming, else from now on. Never ends on
    its own, but once `authorized()` (asked before each read: its API key is still in force) is
    false. Each batch it reads (`_owner_read`) is read and rendered in a turn in `turn_key`'s
    place, and sent as one chunk. A heartbeat of a stream that has read past the last id its
    client has (events of other names) is that id, `id:` alone, so a reconnect resumes from there."""
    heartbeat = settings.API_STREAM_HEARTBEAT_SECONDS
    resuming = after is not None
    if after is None:
        with turn_taken(turn_key):
            after = event_log.owner_event_last_id(owner_id=owner_id)
    told = after  # the last id the client has
    yield f"retry: {RECONNECT_MILLISECONDS}\n\n".encode()
    if began_stopping(waiter):
        yield resume_point(after)
        return
    while True:
        with turn_taken(turn_key):
            if not authorized():
                return
            if resuming:  # in its first read's turn
                after, resuming = resumed_from(after, event_log.owner_event_last_id(owner_id=owner_id)), False
            events, after, more = _owner_read(owner_id=owner_id, after=after, job_name=job_name)
            chunk = b"".join(message(event) for event in events)
        if events:
            told = events[-1].id
            yield chunk
        sent, ends = _between_reads(waiter, heartbeat, client, after, more=more)
        if sent and after > told and not ends:
            sent, told = resume_point(after), after
        if sent:
            yield sent
        if ends:
            return


def _owner_read(*, owner_id: uuid.UUID, after: int, job_name: str) -> tuple[list[Any], int, bool]:
    """One read of the owner's stream: the events after `after` to send (a `_batch`),
    the id it has read up to, and whether there is more to read at once.

    Filtered by `job_name`, it looks through SCAN_BATCH of the owner's events at most and has read
    up to the last of those, sent or not. Read to the last it sent, a client's stream of a name
    its jobs seldom have read every event of the client's since that one again at each wake-up
    (each event of the client's) and each heartbeat: 120-150 ms, a parallel scan of the whole
    table, at a million events, read again by each of its streams at each of its events. Up to
    the owner's latest event, none is skipped: its events commit in the order of their ids
    (jobs.event_log), so none can still come below an id read."""
    if not job_name:
        events, more = _batch(event_log.owner_events_after(owner_id=owner_id, after_id=after))
        return events, events[-1].id if events else after, more
    # The latest first: with fewer than SCAN_BATCH after `after` then, the read below covers
    # every event up to it.
    latest = event_log.owner_event_last_id(owner_id=owner_id)
    up_to = event_log.owner_event_id_after(owner_id=owner_id, after_id=after, count=SCAN_BATCH)
    more = up_to is not None
    if up_to is None:
        up_to = max(after, latest)
    events, cut = _batch(event_log.owner_events_of_name(
        owner_id=owner_id, after_id=after, up_to=up_to, count=SCAN_BATCH, job_name=job_name,
    ))
    if cut:
        return events, events[-1].id, True
    return events, up_to, more


def _between_reads(
    waiter: Waiter, heartbeat: float, client: socket.socket | None, after: int, *, more: bool
) -> tuple[bytes, bool]:
    """Between two reads of a stream: what it sends, and whether it ends there (the client gone;
    the process about to exit, when the client resumes elsewhere from `after`). With `more` to
    catch up on it reads again at once, but asks first (Waiter.ended): a stream replaying a long
    history read batch after batch, a turn each, and noticed neither its process stopping (it
    read and sent on until it caught up, or graceful_timeout killed it) nor its client gone
    (until a write failed). Otherwise it waits for its next wake-up, at most a heartbeat."""
    outcome = waiter.ended(client) if more else idle(waiter, heartbeat, client)
    if outcome == "gone":
        return b"", True
    if outcome == "stopping":
        return resume_point(after), True
    if outcome == "timeout":
        return b": heartbeat\n\n", False
    return b"", False


class Placed:
    """A stream's body and its waiter's place in the room, given back when the response is
    closed (the server closes it when the body has ended, failed, or never started: a client
    that hung up first). While the server writes a chunk of it to `client`, its waiter knows, so
    that its process's stop ends the write (Waiter.stop).

    The body runs after the request's middleware has answered and cleared the request's log
    context (core/request_context.py): each chunk is made in that context again, so what the
    body logs names its request. A read the database's outage fails (PostgreSQL gone under an
    open stream) ends the stream as a stream ends, its client reconnecting (and answered 503
    while the outage lasts), in one WARNING line: it broke off the response, and gunicorn logged
    an ERROR with a traceback naming no request, one for each stream open in the process."""

    def __init__(self, waiter: Waiter, body: Generator[bytes, None, None], client: socket.socket | None) -> None:
        self._waiter: Waiter | None = waiter
        self._body = body
        self._client = client
        self._log_context = logs.context()  # made in the view: the request's id and client

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        waiter = self._waiter
        if waiter is not None:
            waiter.writing_to = None
        with logs.bound(**self._log_context):
            chunk = self._chunk()
        if waiter is not None:
            waiter.writing_to = self._client  # the server writes it before it asks for the next
        return chunk

    def _chunk(self) -> bytes:
        try:
            return next(self._body)
        except DatabaseError as exc:
            down = outage_of(exc)
            if down is None:
                raise
            logger.warning("%s, ended the event stream: %s", down.logged_as, first_line(exc))
            raise StopIteration from None

    def close(self) -> None:
        self._body.close()
        if self._waiter is not None:
            self._waiter.writing_to = None
            waiter_release(self._waiter)
            self._waiter = None
