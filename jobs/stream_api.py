"""The event-stream views: `GET /api/jobs/{id}/events/` and `GET /api/events/` (jobs.streams)."""
from __future__ import annotations

import logging
import socket
import uuid
from functools import partial
from typing import Any

from django.conf import settings
from django.http import HttpResponseBase, StreamingHttpResponse
from django.utils.log import log_response
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.auth import api_key_in_force
from core.concurrency import turn_key
from core.errors import ApplicationError
from jobs import selectors, streams, waiting
from jobs.wakeups import Waiter

EVENT_STREAM = "text/event-stream"
# The line for a stream refused because its API process is full: at most one a minute per
# process (core/logs.py, its filter in LOGGING).
full_logger = logging.getLogger("jobs.streams.server_full")


class EventStreamRenderer(BaseRenderer):
    """Lets a client ask for `text/event-stream`; the streams write their bytes themselves."""

    media_type = EVENT_STREAM
    format = "sse"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        return b""


def _streaming(body: Any) -> StreamingHttpResponse:
    response = StreamingHttpResponse(body, content_type=EVENT_STREAM)
    response["Cache-Control"] = "no-cache"
    # nginx (and proxies that follow it) would buffer the stream and deliver it late, in lumps.
    response["X-Accel-Buffering"] = "no"
    return response


def _refused(why: str) -> None:
    """Raise the answer to a stream the process's room has no place for (waiting: `why`)."""
    if why == waiting.SERVER_FULL:
        raise ApplicationError(
            "This server holds as many streams as it may; reconnect in a moment.",
            code="too_many_streams", status_code=503, headers={"Retry-After": "1"},
        )
    if why == waiting.CLIENT_FULL:
        raise ApplicationError(
            f"You hold {settings.API_MAX_WAITERS_PER_CLIENT} waits and streams on this server, the most "
            "one client may; close one first.",
            code="too_many_open_streams", status_code=429, headers={"Retry-After": "1"},
        )


def _headers_alone(request: Request) -> StreamingHttpResponse:
    """A HEAD's answer: a stream's headers, and no stream (RFC 9110 9.3.2: what GET answers,
    without content). Opened, its body ran on after its client had its whole answer, holding a
    thread and one of the client's places: the clients' stream for as long as the connection
    stayed open, and under Django's own server the answer never came at all. Its GET's refusal
    (503, 429) when the room has no place for the stream now: a 200 told the client it could
    open a stream its GET was refused."""
    _refused(waiting.room_refused(request.user.pk))
    return _streaming(iter(()))


def _placed(request: Request, *, job_id: uuid.UUID | None = None) -> Waiter:
    """The stream's waiter, its place in the process's room taken now, while the view holds the
    request's turn (the body runs after the view gave it back); 503 or 429 when there is none."""
    waiter, refused = waiting.waiter_placed(
        client_id=request.user.pk, job_id=job_id, owner_id=None if job_id else request.user.pk
    )
    _refused(refused)
    assert waiter is not None
    return waiter


def _client(request: Request) -> socket.socket | None:
    """The stream's client socket (None from servers that do not hand it over), its writes bounded."""
    client = waiting.client_socket(request.META)
    streams.writes_bounded(client)
    return client


def _resume_from(request: Request) -> int | None:
    return streams.last_event_id(
        request.headers.get("Last-Event-ID") or request.query_params.get("last_event_id")
    )


def _key_in_force(request: Request) -> partial[bool]:
    """Whether the stream's API key still authenticates, for the stream to ask as it goes."""
    return partial(api_key_in_force, digest=request.auth.digest)


class _StreamApi(APIView):
    renderer_classes = (JSONRenderer, EventStreamRenderer)

    def finalize_response(self, request: Request, response: HttpResponseBase, *args: Any, **kwargs: Any) -> Any:
        # Errors (404, 401, 429) are the usual JSON, whatever the client accepts.
        if isinstance(response, Response):
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), "application/json"
            if response.status_code == 503 and response.data["error"]["code"] == "too_many_streams":
                _server_full_logged(request, response)
        return super().finalize_response(request, response, *args, **kwargs)


def _server_full_logged(request: Request, response: Response) -> None:
    """One WARNING line (at most a minute per process) for the 503s of a full process, in place of
    django.request's ERROR for each: any client at its stream limit reconnecting every second, as
    `Retry-After` tells it, wrote one a request, a page for what is a capacity to add
    (API_MAX_WAITERS_PER_PROCESS, WEB_THREADS, more processes), which the line names.
    log_response (Django's own) marks the response logged, so django.request adds none."""
    log_response("%s: this API process holds as many waits and streams as it may (API_MAX_WAITERS_PER_PROCESS, "
                 "%s); answered 503 too_many_streams (this line at most once a minute per process)",
                 request.path, settings.API_MAX_WAITERS_PER_PROCESS, response=response, request=request,
                 logger=full_logger, level="warning")


class JobEventStreamApi(_StreamApi):
    def get(self, request: Request, job_id: str) -> StreamingHttpResponse | Response:
        job = selectors.job_get(owner=request.user, job_id=job_id)
        after = _resume_from(request)
        if streams.job_stream_over(job=job, after=after):
            # 204 is how a stream says it is over for good: EventSource stops reconnecting.
            return Response(status=204)
        if request.method == "HEAD":
            return _headers_alone(request)
        waiter = _placed(request, job_id=job.id)
        client = _client(request)
        return _streaming(streams.Placed(waiter, streams.job_event_stream(
            waiter=waiter, job_id=job.id, after=after, client=client,
            turn_key=turn_key(request), authorized=_key_in_force(request),
        ), client))


class EventStreamApi(_StreamApi):
    def get(self, request: Request) -> StreamingHttpResponse:
        if request.method == "HEAD":
            return _headers_alone(request)
        after, job_name = _resume_from(request), request.query_params.get("job_name", "")
        waiter = _placed(request)
        client = _client(request)
        return _streaming(streams.Placed(waiter, streams.owner_event_stream(
            waiter=waiter, owner_id=request.user.pk, after=after, job_name=job_name,
            client=client, turn_key=turn_key(request), authorized=_key_in_force(request),
        ), client))
