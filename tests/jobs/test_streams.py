"""The event streams end to end: HTTP -> the live server's stream -> a real worker's events ->
the Redis wake-up -> SSE messages, resumed with Last-Event-ID."""
from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from core.auth import api_key_digest
from core.models import ApiKey
from core.services import api_key_create, api_key_revoke
from jobs import streams, waiting, wakeups
from jobs.models import Job, JobEvent
from tests.conftest import Api, every_connection_wrapped

FINAL_EVENTS = {"job.succeeded", "job.failed", "job.canceled"}


def messages(response: requests.Response) -> Iterator[dict[str, Any]]:
    """The stream's SSE messages as they come: {"event", "id", "data"}; comments as {"comment"}."""
    message: dict[str, Any] = {}
    for line in response.iter_lines(chunk_size=1, decode_unicode=True):  # a line as soon as it comes
        if line == "":
            if message:
                yield message
            message = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            message[field] = json.loads(value) if field == "data" else value


def events_until_final(lines: Iterator[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events a stream's messages carry, up to the first final one, that included."""
    received = []
    for message in lines:
        if "event" in message:
            received.append(message)
            if message["event"] in FINAL_EVENTS:
                break
    return received


def stream(api: Api, path: str, **headers: str) -> requests.Response:
    response = api.get(path, stream=True, headers={"Accept": "text/event-stream", **headers}, timeout=30)
    assert response.status_code == 200, response.text
    return response


def test_a_jobs_stream_shows_started_progress_and_succeeded_in_order_with_ids(api: Api) -> None:
    created = api.submit("api.tasks.long_running_task", {"duration": 2, "message": "m"})

    response = stream(api, f"/api/jobs/{created['id']}/events/")
    received = [m for m in messages(response) if "event" in m]

    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["X-Accel-Buffering"] == "no"
    types = [m["event"] for m in received]
    assert types[-1] == "job.succeeded"
    assert types[0] in {"job.started", "job.progress"}  # its current state when we connected
    assert "job.progress" in types
    ids = [int(m["id"]) for m in received]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    final = received[-1]["data"]
    assert final["type"] == "job.succeeded"
    assert final["data"]["id"] == created["id"] and final["data"]["status"] == "SUCCESS"


def test_a_dropped_stream_resumed_with_last_event_id_loses_and_repeats_nothing(api: Api) -> None:
    created = api.submit("api.tasks.long_running_task", {"duration": 3, "message": "m"})
    path = f"/api/jobs/{created['id']}/events/"

    first = stream(api, path)
    seen = []
    for message in messages(first):
        if "event" in message:
            seen.append(message)
            if message["event"] == "job.progress":
                break
    first.close()  # dropped mid-job
    resumed = stream(api, path, **{"Last-Event-ID": seen[-1]["id"]})
    seen += [m for m in messages(resumed) if "event" in m]

    everything = [m for m in messages(stream(api, path, **{"Last-Event-ID": "0"})) if "event" in m]
    # What the two connections received is every event once, in order, and all the job's log
    # holds from where the first joined (which keeps the job's latest progress event only:
    # jobs.event_log.job_event_record).
    ids = [int(m["id"]) for m in seen]
    assert ids == sorted(set(ids))
    assert {int(m["id"]) for m in everything if int(m["id"]) >= ids[0]} <= set(ids)
    assert seen[-1]["event"] == "job.succeeded"
    assert [m["event"] for m in everything] == ["job.started", "job.progress", "job.succeeded"]
    assert everything[0]["event"] == "job.started"


def test_a_finished_jobs_stream_is_its_final_event(api: Api) -> None:
    created = api.submit("api.tasks.hello_world", {"message": "x"})
    api.wait(created["id"])

    received = [m for m in messages(stream(api, f"/api/jobs/{created['id']}/events/")) if "event" in m]

    assert [m["event"] for m in received] == ["job.succeeded"]


def test_a_finished_jobs_stream_resumed_after_its_final_event_is_204_and_holds_no_place(
    api: Api, settings: Any
) -> None:
    # Given a finished job whose stream a client has read to its end (EventSource reconnects a
    # second later by itself, with the final event's id as Last-Event-ID), and a client's share
    # of one stream
    settings.API_MAX_WAITERS_PER_CLIENT = 1
    created = api.submit("api.tasks.hello_world", {"message": "x"})
    api.wait(created["id"])
    path = f"/api/jobs/{created['id']}/events/"
    final = [m for m in messages(stream(api, path)) if "event" in m][-1]

    # When it reconnects after the final event, or after an id past it
    resumed = [
        api.get(path, stream=True, headers={"Accept": "text/event-stream", "Last-Event-ID": last}, timeout=30)
        for last in (final["id"], str(int(final["id"]) + 1000))
    ]

    # Then each is told there is nothing more (204: EventSource stops reconnecting) rather than
    # kept open for events that will never come, and none holds a place: a stream opens after
    assert [response.status_code for response in resumed] == [204, 204]
    assert next(messages(stream(api, "/api/events/"))) == {"retry": "1000"}


def _events_until_the_end(response: requests.Response) -> list[dict[str, Any]]:
    """The stream's events up to its end, or up to its first event (it went on sending)."""
    received = []
    for message in messages(response):
        if "event" in message:
            received.append(message)
            break
    return received


@pytest.mark.parametrize("scope", ["client", "job"])
def test_a_stream_ends_once_its_key_is_revoked(api: Api, settings: Any, scope: str) -> None:
    # Given a stream opened with a key of the client's (the client's, or one job's, a job
    # scheduled an hour ahead), heartbeats each second, and another key of the same client
    settings.API_STREAM_HEARTBEAT_SECONDS = 1
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    created = api.submit("api.tasks.hello_world", {"message": "x"}, run_at=later)
    path = "/api/events/" if scope == "client" else f"/api/jobs/{created['id']}/events/"
    response = stream(api, path)
    received = messages(response)
    assert next(received) == {"retry": "1000"}
    other_key = Api(api.base_url, api_key_create(client=api.client))

    # When the stream's key is revoked (it leaked), and the client's jobs go on with the other key
    api_key_revoke(api_key=ApiKey.objects.get(digest=api_key_digest(api.key)))
    assert other_key.post(f"/api/jobs/{created['id']}/cancel/").status_code == 202
    other_key.wait(other_key.submit("api.tasks.hello_world", {"message": "y"})["id"])

    # Then the stream has ended, with none of their events, and cannot be opened again
    assert _events_until_the_end(response) == []
    assert api.get(path, headers={"Accept": "text/event-stream"}).status_code == 401


def test_another_clients_job_stream_is_404(api: Api, make_api) -> None:  # type: ignore[no-untyped-def]
    created = api.submit("api.tasks.hello_world", {"message": "x"})

    response = make_api().get(f"/api/jobs/{created['id']}/events/", headers={"Accept": "text/event-stream"})

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_the_clients_stream_carries_its_jobs_events_of_the_asked_name(api: Api, make_api) -> None:  # type: ignore[no-untyped-def]
    response = stream(api, "/api/events/?job_name=api.tasks.hello_world")
    lines = messages(response)
    assert next(lines).get("event") is None  # `retry:` first: the stream is open
    other = make_api().submit("api.tasks.hello_world", {"message": "not mine"})
    api.submit("api.tasks.long_running_task", {"duration": 1, "message": "other name"})
    created = api.submit("api.tasks.hello_world", {"message": "x"})

    received = events_until_final(lines)
    response.close()

    assert {m["data"]["data"]["id"] for m in received} == {created["id"]}
    assert other["id"] not in {m["data"]["data"]["id"] for m in received}
    assert [m["event"] for m in received] == ["job.started", "job.succeeded"]
    resumed = stream(api, "/api/events/?job_name=api.tasks.hello_world", **{"Last-Event-ID": received[0]["id"]})
    assert next(m for m in messages(resumed) if "event" in m)["id"] == received[1]["id"]
    resumed.close()


def test_a_last_event_id_that_is_no_event_id_starts_the_stream_afresh_not_a_500(api: Api) -> None:
    # Given a finished job, and ids that are digits to str.isdigit() but no number to int():
    # a superscript two (the header's byte 0xB2 read as latin-1), or ASCII digits past any id
    created = api.submit("api.tasks.hello_world", {"message": "x"})
    api.wait(created["id"])
    path = f"/api/jobs/{created['id']}/events/"

    for header, query in (("\u00b2", ""), ("", "?last_event_id=\u00b2"), ("9" * 5000, "")):
        resumed = stream(api, path + query, **({"Last-Event-ID": header} if header else {}))

        # Then each is taken as no id at all: the stream is the job's current state
        assert [m["event"] for m in messages(resumed) if "event" in m] == ["job.succeeded"]


def test_a_jobs_stream_ends_within_a_heartbeat_when_its_final_wake_up_is_lost(
    api: Api, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a stream of a job that has not started (scheduled an hour ahead), heartbeats each second
    settings.API_STREAM_HEARTBEAT_SECONDS = 1
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    created = api.post("/api/jobs/", json={"job_name": "api.tasks.hello_world", "payload": {"message": "x"},
                                          "run_at": later}).json()
    response = stream(api, f"/api/jobs/{created['id']}/events/")
    received = messages(response)
    assert next(received) == {"retry": "1000"}

    # When it is canceled and the event's wake-up is lost (never published)
    monkeypatch.setattr(wakeups, "job_event_publish", lambda **_: None)
    assert api.post(f"/api/jobs/{created['id']}/cancel/").json()["status"] == "REVOKED"

    # Then the stream still sends the final event after its next heartbeat, and ends
    rest = list(received)
    assert rest[0] == {"comment": "heartbeat"}
    assert [m["event"] for m in rest if "event" in m] == ["job.canceled"]


def test_a_stream_takes_its_place_in_the_room_before_its_body_starts(
    make_api, settings: Any, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    # Given a client's share of one stream, and a stream of its whose body the server has not
    # started yet (it runs after the view gave back the request's turn, when the server writes
    # it: here, once `started` is set)
    settings.API_MAX_WAITERS_PER_CLIENT = 1
    api = make_api()
    built, started = threading.Event(), threading.Event()
    original = streams.owner_event_stream

    def started_late(**kwargs: Any) -> Iterator[bytes]:
        body = original(**kwargs)
        built.set()

        def late() -> Iterator[bytes]:
            started.wait(10)
            yield from body

        return late()

    monkeypatch.setattr(streams, "owner_event_stream", started_late)
    first: list[requests.Response] = []
    opening = threading.Thread(target=lambda: first.append(stream(api, "/api/events/")))
    opening.start()
    assert built.wait(10)
    threading.Timer(2, started.set).start()  # without a place taken, the second waits for this

    # When it asks for a second stream meanwhile
    second = api.get("/api/events/", stream=True, headers={"Accept": "text/event-stream"}, timeout=30)
    try:
        # Then the first stream holds its place already: the second is refused
        assert second.status_code == 429
        assert second.json()["error"]["code"] == "too_many_open_streams"
    finally:
        started.set()
        opening.join(10)
        second.close()
        first[0].close()


def test_limits_count_a_clients_open_stream_until_it_closes(
    api: Api, make_api: Callable[..., Api], settings: Any
) -> None:
    # Given a client's stream open (its place taken once its answer has come), and another client
    settings.API_STREAM_HEARTBEAT_SECONDS = 0.2  # a closed stream ends at its next write
    opened = stream(api, "/api/events/")

    # Then this process's count of its waits and streams has it...
    shown = api.get("/api/limits/").json()["waits_and_streams_per_process"]
    assert shown == {"limit": settings.API_MAX_WAITERS_PER_CLIENT, "used": 1}
    assert make_api().get("/api/limits/").json()["waits_and_streams_per_process"]["used"] == 0

    # ...and, once the client has closed it, no longer
    opened.close()
    deadline = time.monotonic() + 10
    while api.get("/api/limits/").json()["waits_and_streams_per_process"]["used"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert api.get("/api/limits/").json()["waits_and_streams_per_process"]["used"] == 0


def _until_the_end_or(response: requests.Response, seconds: float) -> tuple[list[dict[str, Any]], bool]:
    """The stream's events within `seconds` (it heartbeats, so the time is checked at least that
    often), and whether it ended by then."""
    deadline = time.monotonic() + seconds
    received = []
    for message in messages(response):
        if "event" in message:
            received.append(message)
        if time.monotonic() > deadline:
            return received, False
    return received, True


@pytest.mark.parametrize("where", ["header", "query"])
def test_a_jobs_stream_resumed_past_its_latest_event_still_ends_with_the_job(
    api: Api, settings: Any, where: str
) -> None:
    # Given a job not final yet (scheduled an hour ahead), heartbeats each second, and its stream
    # resumed after an id no event of it has reached (a client's own, or a forged one)
    settings.API_STREAM_HEARTBEAT_SECONDS = 1
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    created = api.submit("api.tasks.hello_world", {"message": "x"}, run_at=later)
    path, forged = f"/api/jobs/{created['id']}/events/", "999999999999"
    if where == "header":
        response = stream(api, path, **{"Last-Event-ID": forged})
    else:
        response = stream(api, f"{path}?last_event_id={forged}")
    assert next(messages(response)) == {"retry": "1000"}

    # When the job is canceled
    assert api.post(f"/api/jobs/{created['id']}/cancel/").json()["status"] == "REVOKED"

    # Then the stream sends its final event and ends, as one resumed from an id of the job's
    # does, rather than skip it and hold its client's place until the client hangs up; resumed
    # again, it is over (204)
    try:
        received, ended = _until_the_end_or(response, 10)
    finally:
        response.close()
    assert ended, received
    assert [m["event"] for m in received] == ["job.canceled"]
    resumed = api.get(path, headers={"Accept": "text/event-stream", "Last-Event-ID": forged}, timeout=30)
    assert resumed.status_code == 204


def test_the_clients_stream_resumed_past_its_latest_event_skips_none_of_what_follows(api: Api, settings: Any) -> None:
    # Given the client's stream resumed after an id none of its events has reached, heartbeats
    # each second
    settings.API_STREAM_HEARTBEAT_SECONDS = 1
    response = stream(api, "/api/events/", **{"Last-Event-ID": "999999999999"})
    lines = messages(response)
    assert next(lines) == {"retry": "1000"}

    # When a job of the client's runs
    created = api.submit("api.tasks.hello_world", {"message": "x"})

    # Then the stream carries its events, as from its latest event, rather than skip every event
    # until the ids pass the one it was given
    deadline, first = time.monotonic() + 10, None
    try:
        for message in lines:
            if "event" in message or time.monotonic() > deadline:
                first = message
                break
    finally:
        response.close()
    assert first is not None and first.get("event") == "job.started", first
    assert first["data"]["data"]["id"] == created["id"]


@contextlib.contextmanager
def event_rows_read() -> Iterator[list[int]]:
    """The rows each read of the job events' table returns, on every connection (the live
    server's threads' too), while the block runs."""
    read: list[int] = []

    def rows_read(execute: Any, sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
        result = execute(sql, params, many, context)
        if JobEvent._meta.db_table in sql and sql.lstrip().upper().startswith("SELECT"):
            read.append(context["cursor"].rowcount)
        return result

    with every_connection_wrapped(rows_read):
        yield read


def test_a_jobs_stream_replays_its_history_in_batches_not_in_one_read(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a finished job with a long history (a long_running_task of an hour logs 3,600
    # progress events, each with the job's payload: 67 MB with a 10,000-character message), and
    # batches of 2 events instead of 500
    monkeypatch.setattr(streams, "CATCH_UP_BATCH", 2)
    assert api.client is not None
    job = Job.objects.create(owner=api.client, job_name="api.tasks.hello_world", status=Job.Status.SUCCESS)
    types = ["job.started", *["job.progress"] * 5, "job.succeeded"]
    ids = [
        JobEvent.objects.create(job=job, owner=api.client, job_name=job.job_name, event_type=event_type,
                                body=json.dumps({"type": event_type})).id
        for event_type in types
    ]

    # When a client replays it from its start
    with event_rows_read() as read:
        response = stream(api, f"/api/jobs/{job.id}/events/", **{"Last-Event-ID": "0"})
        received = events_until_final(messages(response))

    # Then it gets every event once, in order, read a batch at a time: read at once, the history
    # was held in the process's memory whole, by each of the client's streams of it
    assert [(m["event"], int(m["id"])) for m in received] == list(zip(types, ids, strict=True))
    assert read and max(read) <= 2, read


@pytest.mark.parametrize("path", ["/api/jobs/{job}/events/", "/api/events/", "/api/events/?job_name={name}"])
def test_a_streams_reads_hold_a_bounded_number_of_bytes_whatever_its_events_hold(
    api: Api, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    # Given a client's job with 7 events of 1,000 bytes each, and reads of 2,500 bytes of events
    # at most instead of 1 MiB (500 events of jobs with 64 KiB payloads were about 50 MB)
    monkeypatch.setattr(streams, "CATCH_UP_MAX_BYTES", 2500)
    assert api.client is not None
    job = Job.objects.create(owner=api.client, job_name="api.tasks.hello_world", status=Job.Status.SUCCESS)
    types = ["job.started", *["job.progress"] * 5, "job.succeeded"]
    ids = []
    for event_type in types:
        body = json.dumps({"type": event_type, "padding": ""})
        body = body.replace('""', '"' + "x" * (1000 - len(body)) + '"')
        ids.append(JobEvent.objects.create(job=job, owner=api.client, job_name=job.job_name,
                                           event_type=event_type, body=body).id)

    # When a client replays it from its start
    with event_rows_read() as read:
        response = stream(api, path.format(job=job.id, name=job.job_name), **{"Last-Event-ID": "0"})
        try:
            received = events_until_final(messages(response))
        finally:
            response.close()

    # Then it gets every event once, in order, at most 3 a read: the events before the last one
    # read hold less than the limit
    assert [(m["event"], int(m["id"])) for m in received] == list(zip(types, ids, strict=True))
    assert read and max(read) <= 3, read


def _catching_up(api: Api, kind: str, client: socket.socket | None) -> tuple[Iterator[bytes], list[int], Any]:
    """A stream of `kind` ("job", "owner") replaying 6 events of the client's from its start, 2
    a read (CATCH_UP_BATCH patched by the caller), its body run by the test; its first read
    sent. Gives the body, the events' ids and its waiter."""
    assert api.client is not None
    job = Job.objects.create(owner=api.client, job_name="api.tasks.hello_world", status=Job.Status.STARTED)
    ids = [JobEvent.objects.create(job=job, owner=api.client, job_name=job.job_name, event_type="job.progress",
                                   body=json.dumps({"n": n})).id for n in range(6)]
    waiter, _ = waiting.waiter_placed(client_id=api.client.pk, job_id=job.id if kind == "job" else None,
                                      owner_id=api.client.pk if kind == "owner" else None)
    assert waiter is not None
    common = {"waiter": waiter, "after": 0, "client": client, "turn_key": "client:test", "authorized": lambda: True}
    body = (streams.job_event_stream(job_id=job.id, **common) if kind == "job"
            else streams.owner_event_stream(owner_id=api.client.pk, job_name="", **common))
    assert next(body).startswith(b"retry:")
    sent = b"".join(next(body) for _ in range(2 if kind == "job" else 1))  # a message an event, or a chunk a read
    assert sent == b"".join(streams.message(event) for event in JobEvent.objects.filter(id__in=ids[:2]).order_by("id"))
    return body, ids, waiter


@pytest.mark.parametrize("kind", ["job", "owner"])
def test_a_stream_catching_up_ends_at_its_next_read_when_its_process_stops(
    api: Api, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    # Given a stream replaying a history of 6 events, 2 a read, its first read sent
    monkeypatch.setattr(streams, "CATCH_UP_BATCH", 2)
    body, ids, waiter = _catching_up(api, kind, client=None)
    try:
        # When its process begins to stop (jobs.wakeups.hub.stop: a deploy, a recycle)
        waiter.stop()

        # Then it reads no more: it ends with where its client resumes from. Before, it read and
        # sent the rest of the history first (for a long one, until graceful_timeout killed it).
        assert list(body) == [streams.resume_point(ids[1])]
    finally:
        waiting.waiter_release(waiter)


@pytest.mark.parametrize("kind", ["job", "owner"])
def test_a_stream_catching_up_ends_at_its_next_read_when_its_client_hangs_up(
    api: Api, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    # Given a stream replaying a history of 6 events, 2 a read, its first read sent
    monkeypatch.setattr(streams, "CATCH_UP_BATCH", 2)
    ours, theirs = socket.socketpair()
    body, _, waiter = _catching_up(api, kind, client=ours)
    try:
        # When its client hangs up
        theirs.close()

        # Then it reads no more. Before, it read (a turn each) and rendered the rest of the
        # history, noticing only when a write failed.
        assert list(body) == []
    finally:
        waiting.waiter_release(waiter)
        ours.close()


@pytest.mark.parametrize("path", ["/api/jobs/{job}/events/", "/api/events/"])
def test_a_stream_that_starts_as_its_process_stops_sends_none_of_its_history(
    api: Api, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    # Given a client's job with a history, and its API process begun to stop (jobs.wakeups.hub.stop:
    # a deploy, a recycle; a request taken before it can start its stream after)
    assert api.client is not None
    job = Job.objects.create(owner=api.client, job_name="api.tasks.hello_world", status=Job.Status.STARTED)
    for n in range(3):
        JobEvent.objects.create(job=job, owner=api.client, job_name=job.job_name, event_type="job.progress",
                                body=json.dumps({"n": n}))
    monkeypatch.setattr(wakeups.hub, "stopping", True)

    # When a client replays it from its start
    response = stream(api, path.format(job=job.id), **{"Last-Event-ID": "0"})
    try:
        received = list(messages(response))
    finally:
        response.close()

    # Then the stream ends at once with where the client stands, to resume from elsewhere, and
    # none of the history: its first read (up to 1 MiB) went out first, and to a client reading
    # nothing that write held the process's stop for up to API_STREAM_WRITE_TIMEOUT_SECONDS (the
    # stop shuts down the socket of a write already under way, not of one begun after it)
    assert received == [{"retry": str(streams.RECONNECT_MILLISECONDS)}, {"id": "0"}]


@pytest.mark.parametrize("path", ["/api/events/", "/api/jobs/{job_id}/events/"])
def test_a_head_of_a_stream_is_its_headers_and_opens_no_stream(api: Api, settings: Any, path: str) -> None:
    # RFC 9110 9.3.2: HEAD answers what GET would, without content. A HEAD's client has its
    # whole answer with the headers; the stream it opened ran on, holding a thread and one of the
    # client's places (the clients' stream for as long as the connection stayed open).
    settings.API_MAX_WAITERS_PER_CLIENT = 1
    settings.API_STREAM_HEARTBEAT_SECONDS = 0.2  # the GET's stream, closed, ends at its next write
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    created = api.submit("api.tasks.hello_world", {"message": "m"}, run_at=later)
    url = path.format(job_id=created["id"])

    head = api.request("HEAD", url, headers={"Accept": "text/event-stream"})
    streamed = api.get(url, stream=True, headers={"Accept": "text/event-stream"})

    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Type"] == "text/event-stream" and head.headers["Cache-Control"] == "no-cache"
    assert streamed.status_code == 200, streamed.text  # the client's one place was free
    streamed.close()
    api.post(f"/api/jobs/{created['id']}/cancel/")


@pytest.mark.parametrize("path", ["/api/events/", "/api/jobs/{job_id}/events/"])
def test_a_head_of_a_stream_answers_the_refusal_its_get_would(api: Api, settings: Any, path: str) -> None:
    # Given a job not final yet (scheduled an hour ahead) and the URL of a stream
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    created = api.submit("api.tasks.hello_world", {"message": "m"}, run_at=later)
    url = path.format(job_id=created["id"])
    sse = {"Accept": "text/event-stream"}

    # When the process has room for no stream, then when the client has none left, and with a
    # query no request may carry, a HEAD and a GET ask for it
    answers = []
    per_process, per_client = settings.API_MAX_WAITERS_PER_PROCESS, settings.API_MAX_WAITERS_PER_CLIENT
    for process_room, client_room, query in ((0, per_client, ""), (per_process, 0, ""),
                                             (per_process, per_client, "?job_name=%00")):
        settings.API_MAX_WAITERS_PER_PROCESS, settings.API_MAX_WAITERS_PER_CLIENT = process_room, client_room
        answers.append((api.request("HEAD", url + query, headers=sse), api.get(url + query, headers=sse)))

    # Then each HEAD answers the status and headers of its GET (503, 429, 400), without content,
    # rather than 200 with a stream's headers: a client checking a stream with HEAD was told it
    # could open one that its GET is refused
    assert [(head.status_code, get.status_code) for head, get in answers] == [(503, 503), (429, 429), (400, 400)]
    for head, get in answers:
        assert head.content == b""
        for header in ("Content-Type", "Retry-After"):
            assert head.headers.get(header) == get.headers.get(header), (header, head.headers, get.headers)
