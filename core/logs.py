"""Structured logs: structlog in front of the standard library's handlers, one JSON object a line
(LOG_FORMAT=json) or text, each line with the context of the request or task it belongs to
(request_id, client, job_id, webhook_id, delivery_id), and that context carried from a request
into the Celery tasks it publishes, and from a task into the tasks it publishes in turn.

The service's own lines (a job's transitions, a delivery attempt's outcome, a request) are
structlog calls whose level is decided once, at start: below LOG_LEVEL a call returns at once,
formats nothing and touches no handler (docs/benchmarks.md, "What INFO costs"). Lines from the
standard library's loggers (Django, Celery, ours that use `logging`) get the same fields through
the formatter.

Why not django-structlog: its request middleware trusts any X-Request-ID and does not return it,
and it and its Celery receivers add two lines a request and three a task at INFO, where one line
a transition says what an operator needs (and IP addresses need django-ipware).
"""
from __future__ import annotations

import dataclasses
import io
import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, TextIO

import structlog
from structlog.contextvars import (
    bind_contextvars,
    bound_contextvars,
    clear_contextvars,
    get_contextvars,
    merge_contextvars,
)
from structlog.dev import Column, ColumnFormatter, KeyValueColumnFormatter
from structlog.typing import ExcInfo, Processor

from core.log_database_errors import DatabaseErrorFirstLine
from core.log_volume import (
    CancelOnConnectionLossChosen,
    OncePerInterval,
    RevokedWithoutResultBackend,
)

# The context a task inherits from whoever published it, in this message header.
CONTEXT_HEADER = "log_context"
PROPAGATED_KEYS = ("request_id", "client")


def _plain_values(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Ids and times as text: call sites pass them as they are, so a line below the level
    costs no conversion."""
    for key, value in event_dict.items():
        if isinstance(value, uuid.UUID | datetime):
            event_dict[key] = str(value) if isinstance(value, uuid.UUID) else value.isoformat()
    return event_dict


# Added to every line, the service's own and the standard library's alike.
_SHARED: list[Processor] = [
    merge_contextvars,
    _plain_values,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
]

bind = bind_contextvars
bound = bound_contextvars
clear = clear_contextvars
context = get_contextvars
INFO = logging.INFO


def get_logger(name: str) -> Any:
    """The structlog logger for `name` (its `logger` field)."""
    return structlog.get_logger(name)


def configure(*, level: str) -> None:
    """structlog's side: calls below `level` are no-ops; the rest go to the standard library's
    logger of the same name, whose handler (LOGGING) renders them."""
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )


def _printable(text: str, *, backslashes: bool = True) -> str:
    """`text` with each backslash doubled and each character str.isprintable() refuses (controls,
    line and paragraph separators, bidirectional overrides) written as repr writes them (`\\\\`,
    `\\x1b`, `\\n`, `\\u2028`), and the rest, letters of any script too, as it is: `\\x1b` in the
    log is an escaped ESC, `\\\\x1b` the four characters a client sent. `backslashes=False` for
    a repr, which doubled its strings' backslashes itself."""
    if backslashes and "\\" in text:
        text = text.replace("\\", "\\\\")
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def _printable_value(value_repr: Callable[[object], str]) -> Callable[[object], str]:
    """A column's value_repr whose text is printable: a string the column writes as it is (a
    line's message, a value needing no quotes) escaped, backslashes too; what it writes through
    repr (a value needing quotes, a number, an object) only for any control character an
    object's own repr left in it."""

    def printable(value: object) -> str:
        text = value_repr(value)
        # The very string it was given back: structlog wrote it as it is, not through repr.
        return _printable(text, backslashes=text is value)

    return printable


def _printable_column(formatter: ColumnFormatter) -> ColumnFormatter:
    """The column with a printable value; the level's column writes the service's own names."""
    if isinstance(formatter, KeyValueColumnFormatter):
        return dataclasses.replace(formatter, value_repr=_printable_value(formatter.value_repr))
    return formatter


def _indented_traceback(sio: TextIO, exc_info: ExcInfo) -> None:
    """The traceback of the text format: each of its lines indented and printable, so that no
    line of an exception's message starts a line of the log."""
    traceback = io.StringIO()
    structlog.dev.plain_traceback(traceback, exc_info)
    sio.writelines("\n    " + _printable(line) for line in traceback.getvalue().removeprefix("\n").split("\n"))


def _text_renderer() -> structlog.dev.ConsoleRenderer:
    """The text format's renderer, each of its columns printable: it writes a string value that
    needs no quotes (no space, quote or `=`) as it is, and a line's message and a traceback
    always, so text from outside that reached a line (a model provider's error in a retry's
    message, a job's exception quoting its payload) wrote its escape sequences to the operator's
    terminal (ESC `[2J` cleared it) and its line breaks began lines of their own: a forged line.
    Backslashes are escaped as well, so the four characters `\\x1b` a client sent do not read as
    an escaped ESC. The JSON format escapes them itself. A column's value (columns public since
    structlog 25.5) rather than a processor before it: an escaped value it quoted would have its
    backslashes doubled again."""
    renderer = structlog.dev.ConsoleRenderer(colors=False, exception_formatter=_indented_traceback)
    renderer.columns = [Column(column.key, _printable_column(column.formatter)) for column in renderer.columns]
    return renderer


# Django's loggers of a request refused for what it sent, which anyone can send at will, without a
# key (the admin's login takes any POST): each writes one line a refusal, the SuspiciousOperation
# ones at ERROR with a traceback. Seen once a minute (core.log_volume.OncePerInterval) they still tell an operator
# of a proxy or a setting wrong: a CSRF failure for every login (CSRF_TRUSTED_ORIGINS), forms
# past DATA_UPLOAD_MAX_NUMBER_FIELDS or DATA_UPLOAD_MAX_MEMORY_SIZE.
REFUSED_AT_WILL = (
    "django.security.DisallowedHost", "django.security.csrf", "django.security.TooManyFieldsSent",
    "django.security.TooManyFilesSent", "django.security.RequestDataTooBig",
)
# The loggers whose lines are let through once a minute (core.log_volume.OncePerInterval): those above, a stream
# refused 503 for its API process full (jobs/stream_api.py says why), and a request that met a
# locked table or a statement past its bound (core/errors.py), which every request meeting it says
# the same of while it lasts.
ONCE_A_MINUTE = (*REFUSED_AT_WILL, "jobs.streams.server_full", "core.errors.database_busy",
                 "core.errors.database_long")


def logging_config(*, level: str, json: bool) -> dict[str, Any]:
    """Django's LOGGING: one stream handler on the root logger, JSON or text."""
    if json:
        renderer: list[Processor] = [
            structlog.processors.EventRenamer("message"),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ]
    else:
        renderer = [_text_renderer()]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structured": {
                "()": structlog.stdlib.ProcessorFormatter,
                "foreign_pre_chain": _SHARED,
                "processors": [structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
            }
        },
        "filters": {
            "revoked_without_backend": {"()": RevokedWithoutResultBackend},
            "database_error_first_line": {"()": DatabaseErrorFirstLine},
            "cancel_on_connection_loss_chosen": {"()": CancelOnConnectionLossChosen},
            # One a logger: a filter lets one record through per interval, whichever logger's.
            **{f"{name}_once_a_minute": {"()": OncePerInterval, "seconds": 60.0} for name in ONCE_A_MINUTE},
        },
        # database_error_first_line on every line's traceback too: a service's own logger.exception
        # of an error PostgreSQL raised (a delivery's outcome it refused, webhooks/recording.py).
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured",
                                 "filters": ["database_error_first_line"]}},
        "root": {"handlers": ["console"], "level": level.upper()},
        "loggers": {
            # Celery's own line per task received and per task done: at INFO they doubled the
            # lines of a job, and a job's transitions are logged with their context anyway.
            # Its filter here too, before any handler: its record's extra data.
            "celery.app.trace": {"level": "WARNING", "filters": ["database_error_first_line"]},
            "celery.worker.strategy": {"level": "WARNING"},
            "celery.worker.control": {"filters": ["revoked_without_backend"]},
            # The warnings Celery's worker routes to logging (logging.captureWarnings).
            "py.warnings": {"filters": ["cancel_on_connection_loss_chosen"]},
            # billiard's logger, which does not propagate: a worker gave it a handler of its own
            # in Celery's text format, so its line for a pool process killed (the OOM killer's
            # "Process 'ForkPoolWorker-1' pid:… exited with 'signal 9 (SIGKILL)'") was the one
            # line of a JSON log a shipper could not parse. With ours, Celery leaves it be.
            "multiprocessing": {"handlers": ["console"], "propagate": False},
            # urllib3's WARNING, with a traceback, for every answer whose headers a receiver sent
            # malformed: at will, and naming the receiver's whole URL, whose path or query may
            # carry its token (the service's own lines name its host only). The attempt records
            # the answer anyway (core/http.py).
            "urllib3.connection": {"level": "ERROR"},
            # ...and its DEBUG line for every request, with the whole URL: at LOG_LEVEL=DEBUG,
            # turned on to see what a failing delivery does, every receiver's token.
            "urllib3.connectionpool": {"level": "INFO"},
            # Django's WARNING for every 4xx answer ("Too Many Requests: <path>"): one line a
            # request at the default level, at whatever rate a client sends them, its 429s
            # included (a client past its rate limit wrote about 400 lines a second per API
            # thread, each naming the path it asked for). A client's own mistakes are its
            # business, answered in the error body and counted in jobapi_http_requests_total;
            # the request's INFO line keeps its status. Its ERROR for a 5xx (a bug's traceback,
            # an outage) stays.
            "django.request": {"level": "ERROR"},
            # ONCE_A_MINUTE's, and core.log_volume.OncePerInterval, say why.
            **{name: {"filters": [f"{name}_once_a_minute"]} for name in ONCE_A_MINUTE},
        },
    }


# --- Celery: the context travels in a message header ---------------------------------------


def task_context_publish(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    """before_task_publish: put the current request id and client on the message."""
    if headers is None:
        return
    context = get_contextvars()
    carried = {key: context[key] for key in PROPAGATED_KEYS if key in context}
    if carried:
        headers[CONTEXT_HEADER] = carried


def task_context_bind(task: Any = None, kwargs: dict[str, Any] | None = None, **_: Any) -> None:
    """task_prerun: the context the publisher carried, and the job the task is about."""
    clear_contextvars()
    carried = getattr(task.request, CONTEXT_HEADER, None) if task is not None else None
    if isinstance(carried, dict):
        bind_contextvars(**{key: carried[key] for key in PROPAGATED_KEYS if key in carried})
    job_id = (kwargs or {}).get("job_id") or (kwargs or {}).get("subject_id")
    if job_id:
        bind_contextvars(job_id=str(job_id))


def task_context_clear(**_: Any) -> None:
    """task_postrun: nothing of this task's context reaches the next one."""
    clear_contextvars()
