"""Every `error.code` the service answers: its HTTP status, when it comes, and what a client does.

The one list. docs/api.md ("Error codes") and the spec (the API's description, and the
`ErrorDetail.code` field) show it as `error_codes_markdown` and `ERROR_CODE_HELP` render it, and
tests/core/test_error_codes.py fails when the source answers a code this list lacks, with
another status, or when it lists a code nothing answers. A new code: one line here, then
`make schema` and the table in docs/api.md (the test prints it).

Plain Python, no Django: `python -c "import core.error_codes as e; print(e.error_codes_markdown())"`.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorCode:
    status: int  # the HTTP status it always comes with
    when: str  # what the request did or met, and what `details` holds
    then: str  # what the client does about it


_FIX = "Correct the request: sent again as it is, it fails again."
_RETRY_AFTER = "Retry after `Retry-After` seconds."
_OUTAGE = (
    "Retry after `Retry-After` seconds; send a submission's `Idempotency-Key` again with it, so "
    "that it makes one job however many times it is sent."
)

ERROR_CODES: dict[str, ErrorCode] = {
    # 400: the request cannot be taken as it is; it changed nothing.
    "bad_request": ErrorCode(
        400, "The request could not be read: a malformed request line or header, an unknown HTTP version "
        "(`HTTP/9.9`), an invalid `Content-Length`, a connection lost while its body was read, a `Host` this "
        "service does not serve.", "Correct the client (or the proxy in front of it).",
    ),
    "invalid": ErrorCode(
        400, "A field is invalid (a submission's `metadata`, `run_at`, `deadline` or `retry`, a webhook "
        "endpoint's fields, ...), the body is not a JSON object, or it has a `deadline` and a "
        "`Cancel-After` header both; `details` maps each field to its errors.", _FIX,
    ),
    "invalid_payload": ErrorCode(
        400, "The `payload` does not match its job type's schema (`GET /api/job-types/`), or is not an "
        "object; `details.payload` maps each field to its errors.", _FIX,
    ),
    "unknown_job_name": ErrorCode(
        400, "`job_name` is no registered job type; `details.valid_job_names` lists them.", _FIX,
    ),
    "job_type_unavailable": ErrorCode(
        400, "The job type cannot run on this deployment for now (its configuration is missing, such as "
        "a model's API key); `details.reason` says why.",
        "Submit it once `GET /api/job-types/` shows it `available`: the operator has to act first.",
    ),
    "invalid_batch": ErrorCode(
        400, "Submissions of a batch are invalid; `details` lists each one's `index`, `code`, `message` "
        "and `details`. No job of the batch was created.", "Correct the submissions listed, then send the "
        "whole batch again.",
    ),
    "batch_too_large": ErrorCode(
        400, "A batch of more submissions than `API_MAX_BATCH_SIZE` (1,000 by default), or than the client's "
        "submissions a minute or unfinished jobs where the operator set those lower: it could never be "
        "accepted (`details.max_jobs`).",
        "Split it into batches of at most `details.max_jobs`.",
    ),
    "malformed_json": ErrorCode(
        400, "The body is not JSON: a syntax error, `NaN` or `Infinity`, a key twice in an object, bytes "
        "that are not UTF-8, or no body at all.", _FIX,
    ),
    "invalid_json": ErrorCode(
        400, "The JSON holds what cannot be stored: `\\u0000` or a lone surrogate (`\\ud800`) in a key or "
        "a value; `details.character` names it.", _FIX,
    ),
    "json_too_deep": ErrorCode(400, "The JSON is nested deeper than `API_MAX_JSON_DEPTH` levels.", _FIX),
    "invalid_callback_url": ErrorCode(
        400, "`callback_url` is refused: not http(s), with credentials, a host that does not resolve or "
        "resolves to a private or loopback address, ...; `details.callback_url` says why.",
        "Give the URL of a receiver on a public address.",
    ),
    "invalid_url": ErrorCode(
        400, "A webhook endpoint's `url` is refused, for a reason a `callback_url` would be; `details.url` "
        "says why.", "Give the URL of a receiver on a public address.",
    ),
    "invalid_header": ErrorCode(
        400, "`Idempotency-Key` is longer than 255 bytes or holds control characters (U+0000 to U+001F, U+007F); `Cancel-After` "
        "is not a duration (`90`, `90s`, `5m`, `1h`) of more than zero, or ends after year 9999.", _FIX,
    ),
    "invalid_filter": ErrorCode(
        400, "A list's filter value is invalid (a date out of range, an unknown `status`, ...), or the "
        "query names a parameter the list does not take (`(empty name)` for a value with no name) or "
        "gives one twice; `details` names each, all in one answer, with an invalid `page_size` or `cursor` "
        "of the same query.", _FIX,
    ),
    "invalid_cursor": ErrorCode(
        400, "`cursor` is none this list issued (altered, cut short, or another list's).",
        "Follow `next` and `previous` as given, or start again without a cursor.",
    ),
    "invalid_parameter": ErrorCode(
        400, "`page_size` is not a whole number of at least 1 (and, when `details` names `cursor` too, the "
        "cursor is none this list issued).", _FIX,
    ),
    "missing_parameter": ErrorCode(400, "The starter's `GET /api/job/` without `job_id`.", _FIX),
    "invalid_query": ErrorCode(
        400, "The query string is not UTF-8, holds U+0000 (`%00`), or has more than 1000 parameters.", _FIX,
    ),
    "invalid_path": ErrorCode(400, "The path holds U+0000 (`%00`).", _FIX),
    # 401, 403, 404, 405, 406: who asks, and for what.
    "not_authenticated": ErrorCode(
        401, "No `Authorization` header (on `/metrics`: no metrics token, or another one).",
        "Send `Authorization: Bearer <key>`.",
    ),
    "authentication_failed": ErrorCode(
        401, "`Authorization` is malformed, or its API key is unknown or revoked.",
        "Use a valid key: a wrong one sent again and again ends in `too_many_failed_authentications`.",
    ),
    "permission_denied": ErrorCode(
        403, "A staff page (the admin, the operators' console) for a signed-in user without the "
        "permission it takes. The API never answers it: another client's ids are `not_found`.",
        "Ask an administrator for the permission.",
    ),
    "not_found": ErrorCode(
        404, "No such resource for this API key (another client's ids alike), no such path, or "
        "`/metrics` while metrics are off.", "Check the id or the path; asking again will not find it.",
    ),
    "method_not_allowed": ErrorCode(
        405, "The path does not take this method; the `Allow` header lists those it takes.", _FIX,
    ),
    "not_acceptable": ErrorCode(
        406, "`Accept` admits nothing the endpoint answers: `application/json` (an event stream, "
        "`text/event-stream` too).", "Accept `application/json`, or send no `Accept`.",
    ),
    # 408, 413, 415: the body.
    "request_timeout": ErrorCode(
        408, "The body did not all arrive within `WEB_BODY_READ_SECONDS` (10 s by default); the "
        "connection is closed.", "Send the request again, its body right after its headers.",
    ),
    "payload_too_large": ErrorCode(
        413, "The body is larger than `API_MAX_BODY_BYTES` (1 MiB by default), or a `payload` larger "
        "than its job type's `max_payload_bytes` (`details` has both sizes).",
        "Send less: keep large inputs elsewhere and pass a reference to them.",
    ),
    "unsupported_media_type": ErrorCode(415, "`Content-Type` is not `application/json`.", _FIX),
    # 414, 417, 431, 501: a request the server cannot parse (answered by gunicorn_worker.py, which
    # writes these codes again: it imports nothing of the application). The connection is closed.
    "request_line_too_long": ErrorCode(
        414, "The request line (the method, the path with its query string, the HTTP version) is longer "
        "than 4094 bytes.", "Send a shorter path or query string: put long inputs in a body.",
    ),
    "expectation_failed": ErrorCode(
        417, "An `Expect` header other than `100-continue`.", "Send no `Expect`, or `Expect: 100-continue`.",
    ),
    "request_headers_too_large": ErrorCode(
        431, "More than 100 headers, or one longer than 8190 bytes.", "Send fewer, shorter headers.",
    ),
    "unsupported_transfer_coding": ErrorCode(
        501, "A `Transfer-Encoding` other than `chunked`, `gzip`, `deflate`, `compress` and `identity`.",
        "Send the body with a `Content-Length`, or chunked.",
    ),
    # 409, 422: the state of what the request acts on.
    "job_already_final": ErrorCode(
        409, "Canceling a job that is already `SUCCESS`, `FAILURE` or `REVOKED`.",
        "Nothing: read the job for how it ended.",
    ),
    "idempotency_key_in_progress": ErrorCode(
        409, "A request with this `Idempotency-Key` is still being processed.",
        "Retry shortly, with the same key and body.",
    ),
    "nothing_to_redeliver": ErrorCode(
        409, "Redelivering a job that has not ended, has no `callback_url`, whose `webhook_events` "
        "leave its final event out, or whose final event is past `WEBHOOK_EVENT_RETENTION_DAYS` and was pruned.", "Redeliver once the job has ended; otherwise there is nothing to send.",
    ),
    "delivery_in_progress": ErrorCode(
        409, "Redelivering an event whose delivery has not ended.",
        "Redeliver once it has ended (the job's deliveries show it), if it failed.",
    ),
    "too_many_endpoints": ErrorCode(
        409, "Registering a webhook endpoint past `WEBHOOK_MAX_ENDPOINTS_PER_CLIENT` "
        "(`details.max_endpoints`).", "Delete one first.",
    ),
    "idempotency_key_reused": ErrorCode(
        422, "This `Idempotency-Key` came with another body, another `Cancel-After`, or to another "
        "endpoint, within `IDEMPOTENCY_KEY_TTL_SECONDS` (24 h by default).",
        "Use a new key for a new request; the first request's job is unchanged.",
    ),
    # 429: too much at once; each with `Retry-After`.
    "rate_limited": ErrorCode(
        429, "Too many requests a minute in the endpoint's scope (submissions, reads, writes, sensitive "
        "writes); `details.retry_after_seconds`.", _RETRY_AFTER,
    ),
    "too_many_failed_authentications": ErrorCode(
        429, "Too many requests with a wrong API key from this address: until `Retry-After`, its requests "
        "with a key not yet seen working are refused unchecked.", "Fix the key; retry after `Retry-After` seconds.",
    ),
    "too_many_unfinished_jobs": ErrorCode(
        429, "The client has as many jobs not final yet as it may (`JOB_MAX_UNFINISHED_PER_CLIENT`, or its "
        "own cap); `details.max_unfinished_jobs` has it.",
        "Wait for some to end; retry after `Retry-After` seconds.",
    ),
    "result_quota_exceeded": ErrorCode(
        429, "The client's persisted results hold `JOB_RESULT_QUOTA_BYTES_PER_CLIENT` bytes or more, so job "
        "types that persist their result are refused (others are not); `details` has both figures.",
        "Nothing the client does frees room (the API deletes no result): "
        "results go after `JOB_RESULT_RETENTION_DAYS`, and `Retry-After` is when its oldest does, which may be "
        "months away. Meanwhile submit job types that persist nothing, or ask the operator for room sooner.",
    ),
    "job_storage_quota_exceeded": ErrorCode(
        429, "The client's stored jobs' payloads and metadata (finished ones too, until they are pruned) hold "
        "`JOB_PAYLOAD_QUOTA_BYTES_PER_CLIENT` bytes or more, so its submissions are refused (a batch whole); "
        "`details` has both figures. A submission under it is accepted whole, so the jobs may pass it by that "
        "submission's bytes.",
        "Finished jobs go `JOB_RETENTION_DAYS` after they finish, and `Retry-After` is when its oldest submitted "
        "finished job goes (later, when one submitted after it finished first); with none finished, room comes "
        "no sooner than that long after one finishes or is canceled, and `Retry-After` is that from now. Smaller "
        "payloads hold more jobs. For room sooner, ask the operator.",
    ),
    "webhook_backlog_full": ErrorCode(
        429, "A job that would reach your registered endpoints, while one of them, paced by its "
        "`rate_limit_per_second`, has `WEBHOOK_MAX_BACKLOG_PER_ENDPOINT` deliveries or more waiting for its "
        "pace (a batch holding one is refused whole); `details` names the endpoint, with both figures. "
        "`GET /api/limits/` shows them ahead of it (`webhook_backlog`: `limit`, and `waiting_deliveries` of "
        "each endpoint with some waiting).",
        "Retry after `Retry-After` seconds, once the endpoint has sent some; or raise its pace, or submit with "
        "`webhook_endpoints: false`.",
    ),
    "model_budget_exhausted": ErrorCode(
        429, "A job type that calls a model (the checklist), from a client whose jobs have spent its daily "
        "budget of model tokens (`MODEL_TOKENS_PER_CLIENT_PER_DAY`, or its own) this UTC day (a batch holding "
        "one is refused whole); `details` has the tokens spent, the budget and `renews_at`.",
        "Retry after `Retry-After` seconds, at midnight UTC; other job types are accepted meanwhile.",
    ),
    "too_many_open_streams": ErrorCode(
        429, "The client holds as many event streams and waits on this API process as one client may "
        "(`API_MAX_WAITERS_PER_CLIENT`); `GET /api/limits/` shows it and how many the client holds on the "
        "process that answers it (`waits_and_streams_per_process`), not on the others.",
        "Close one; retry after `Retry-After` seconds.",
    ),
    "too_many_callback_lookups": ErrorCode(
        429, "A submission (or a batch), or a webhook endpoint's creation or change, naming a callback host "
        "name while `CALLBACK_RESOLVE_MAX_PER_CLIENT` of the client's requests are waiting for theirs to resolve "
        "(each up to `CALLBACK_RESOLVE_SECONDS`) on the API process that answers it: refused at once if as many "
        "more wait already for one of those places, else once it waited 1 s for one and none came free. It "
        "changed nothing. Requests naming no host name, or an IP address, are not counted.",
        "Retry after `Retry-After` seconds (1: by then a place of those waiting is free); if your callback "
        "hosts' names are slow to resolve, send fewer such requests at once.",
    ),
    # 500, 503: the service's side.
    "server_error": ErrorCode(
        500, "An error the service did not expect (a bug); the message says no more, the log has it "
        "under the answer's `X-Request-ID`.", "Retry later (a submission with its `Idempotency-Key`); "
        "report the `X-Request-ID` if it persists.",
    ),
    "signing_secret_unreadable": ErrorCode(
        500, "`GET` of a webhook signing secret (the client's or an endpoint's) that the service cannot "
        "decrypt: its operator changed `SECRET_KEY` without keeping the previous one in "
        "`SECRET_KEY_FALLBACKS`. Its deliveries fail as internal errors until that is put right.",
        "Tell the operator; or rotate the secret with `expire_previous_now: true` to have a new one at once.",
    ),
    "database_unavailable": ErrorCode(503, "The service's database is out of reach.", _OUTAGE),
    "storage_full": ErrorCode(
        503, "Embedded mode (`make run`): the disk the service keeps its data on is full.", _OUTAGE,
    ),
    "too_many_streams": ErrorCode(
        503, "This API process holds as many waits and event streams as it may "
        "(`API_MAX_WAITERS_PER_PROCESS`).", "Reconnect after `Retry-After` seconds.",
    ),
    "not_ready": ErrorCode(
        503, "`GET /readyz` only: a dependency is out of reach; `details.failed` names which.",
        "(A load balancer's) send this instance no requests until it answers 200.",
    ),
    "database_busy": ErrorCode(
        503, "A table the request needs is locked (a migration, a `LOCK TABLE`, a `TRUNCATE`): it waited "
        "`API_DB_LOCK_TIMEOUT_SECONDS` (5 s by default) for the lock; or one of its statements ran "
        "`API_DB_STATEMENT_TIMEOUT_SECONDS` (25 s by default; a page of many large values, a filter "
        "matching many rows) and PostgreSQL ended it. `GET /console/`: its reads did not "
        "finish within `OPERATOR_READ_TIMEOUT_SECONDS`, or a table they read is locked or too large to "
        "read in time.",
        _OUTAGE + " A long statement: ask for less (a smaller `page_size`, a narrower filter). (The "
        "operator's) if it persists, look for what holds the lock (`pg_stat_activity`, `pg_locks`), or "
        "which statement ran long (the API's log); the console's page retries by itself.",
    ),
    "metrics_unavailable": ErrorCode(
        503, "`GET /metrics` only: metrics are on, but this API process was started without its "
        "`PROMETHEUS_MULTIPROC_DIR` (not through `scripts/web`), so it has no metrics to serve.",
        "(The operator's) start the API through `scripts/web`, or set `PROMETHEUS_MULTIPROC_DIR`.",
    ),
}


def _by_status() -> list[tuple[str, ErrorCode]]:
    return sorted(ERROR_CODES.items(), key=lambda item: item[1].status)


def error_codes_markdown() -> str:
    """The list as a Markdown table, by status: docs/api.md's and the API description's."""
    lines = ["| code | status | when | what to do |", "| --- | --- | --- | --- |"]
    lines += [f"| `{code}` | {error.status} | {error.when} | {error.then} |" for code, error in _by_status()]
    return "\n".join(lines)


# The spec's `ErrorDetail.code`: every code, for a generated client's documentation of the field.
ERROR_CODE_HELP = (
    "Machine-readable error code, stable across releases: branch on this, not on the message. One of "
    + ", ".join(f"`{code}` ({error.status})" for code, error in _by_status())
    + "; the API description's *Error codes* says when each comes and what to do. A later release may "
    "add codes: treat one you do not know by its HTTP status."
)
