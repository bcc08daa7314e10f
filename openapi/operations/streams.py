"""`Prefer: wait` and the event streams in the spec: the headers, and the streams' operations
(their `text/event-stream` answer is written out by openapi.hooks)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema

from openapi.schemas import JOB_ID, error_example, error_responses, query_parameter

PREFER = OpenApiParameter(
    "Prefer",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description="`wait=N` (RFC 7240): answer once the job is final, or after `N` seconds (1 to "
    "`API_MAX_WAIT_SECONDS`, 60 by default; more is capped; a bare `wait` is the cap), or at once "
    "when the API process stops (a deploy, a recycle), with the job as it is then. The status code is the usual one; `Preference-Applied` says the wait "
    "honoured. A preference that cannot be read (`wait=0`, `wait=soon`) is ignored, and so is a "
    "wait the server has no room for: the API process holds as many waits and streams as it may, "
    "or this client holds its share of them (`API_MAX_WAITERS_PER_CLIENT`).",
)
PREFERENCE_APPLIED = {
    "Preference-Applied": {
        "description": "`wait=N`: the request waited (up to) `N` seconds, as `Prefer` asked.",
        "schema": {"type": "string", "example": "wait=60"},
    }
}
# RFC 7240 section 2: the answers a preference may change say so, whether or not it was asked.
VARY_PREFER = {
    "Vary": {
        "description": "Names `Prefer`: the answer depends on it (a cache keeps a waited answer apart "
        "from a poll's).",
        "schema": {"type": "string", "example": "Prefer"},
    }
}
LAST_EVENT_ID = OpenApiParameter(
    "Last-Event-ID",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description="Resume after this event (the `id:` of the last message received): every later "
    "event comes once, in order, of a job's progress events the latest (each replaces the job's "
    "earlier ones). EventSource sends it by itself when it reconnects; the "
    "`last_event_id` query parameter does the same for clients that cannot set headers.",
)
_STREAM_RULES = (
    "Server-sent events (`text/event-stream`). Each message is one event: `event:` its type "
    "(`job.started`, `job.progress`, `job.succeeded`, `job.failed`, `job.canceled`), `id:` its "
    "id, `data:` the same JSON a webhook carries (the `JobEvent` schema: `type`, `timestamp`, "
    "`data` the job). `job.progress` comes at most once every 500 ms per job, and is kept for "
    "a catch-up only as the job's latest. An idle stream "
    "sends a `: heartbeat` comment every 15 s. The answer carries `X-Accel-Buffering: no` and "
    "`Cache-Control: no-cache` so proxies pass each message on at once. When the API process "
    "stops (a deploy, a recycle) the stream ends with a message of an `id:` alone (no event): "
    "reconnect with it as `Last-Event-ID` (EventSource does) and nothing is skipped but the "
    "progress events a later one of their job replaced meanwhile (that one comes). A stream "
    "ends once its API key is revoked (within `API_KEY_CACHE_SECONDS`, 5 s, as for any request "
    "with it); opening it again is then a `401`."
)
STREAM_EXAMPLE = (
    "retry: 1000\n\n"
    "event: job.started\nid: 41\ndata: {\"type\":\"job.started\",\"timestamp\":\"2026-11-28T14:00:00.150000Z\","
    "\"data\":{\"id\":\"3f0c5a6e-8a0e-4c59-9a53-6d1e3b2f7c11\",\"status\":\"STARTED\",\"...\":\"...\"}}\n\n"
    ": heartbeat\n\n"
)
_FULL = {
    503: (
        (
            "This API process holds as many waits and streams as it may "
            "(`API_MAX_WAITERS_PER_PROCESS`); reconnect after `Retry-After`. Code: `too_many_streams`."
        ),
        error_example(503, "too_many_streams", "This server holds as many streams as it may; reconnect in a moment."),
    ),
    429: (
        (
            "Too many reads per minute (`rate_limited`), too many requests with a wrong API key "
            "from this address (`too_many_failed_authentications`), or this client holds as many "
            "waits and streams on this API process as one client may (`API_MAX_WAITERS_PER_CLIENT`, "
            "a quarter of the process's by default): close one, then retry after `Retry-After`. "
            "Code: `too_many_open_streams`."
        ),
        error_example(
            429, "too_many_open_streams",
            "You hold 61 waits and streams on this server, the most one client may; close one first.",
        ),
    ),
}
_STREAM_200 = OpenApiResponse(OpenApiTypes.STR, description="The stream (see the operation's description).")

OPERATIONS: dict[str, dict[str, Callable[..., Any]]] = {
    "jobs.stream_api.JobEventStreamApi": {
        "get": extend_schema(
            operation_id="stream_job_events",
            summary="Stream a job's events",
            description=_STREAM_RULES + "\n\nIt starts with the job's latest event (its current "
            "state; nothing before the job starts), or with what followed `Last-Event-ID`, and "
            "ends after the final event (or when the API process stops, see above). Resumed after "
            "the final event (EventSource reconnects by itself once the stream ends), it answers "
            "`204`: nothing more will come, and EventSource stops reconnecting.",
            tags=["Jobs"],
            parameters=[JOB_ID, LAST_EVENT_ID],
            responses={
                200: _STREAM_200,
                204: OpenApiResponse(description="The job is final and `Last-Event-ID` is its final event (or later): "
                                     "nothing more will come."),
                **error_responses(401, 404, 503, described=_FULL),
            },
        ),
    },
    "jobs.stream_api.EventStreamApi": {
        "get": extend_schema(
            operation_id="stream_events",
            summary="Stream every job's events",
            description=_STREAM_RULES + "\n\nEvery event of this client's jobs from now on (or "
            "after `Last-Event-ID`); it ends only when the API process stops (see above). With "
            "`job_name`, a heartbeat after events of other types is an `id:` line alone, the last "
            "event it has read: a reconnect resumes from there.",
            tags=["Jobs"],
            parameters=[LAST_EVENT_ID, query_parameter("job_name", OpenApiTypes.STR, "Only jobs of this type.")],
            responses={200: _STREAM_200, **error_responses(401, 503, described=_FULL)},
        ),
    },
}
