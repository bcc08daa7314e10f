"""A job's stored `error`, `progress`, `metadata` and `webhook_events` in the shapes the API
documents, whatever the row holds.

The code writes `error` as {"type": str, "message": str}, `progress` as {"current": int,
"total": int, "message": str}, `metadata` as an object of strings and `webhook_events` as a list
of event types, but the columns are JSON:
a row written by hand in SQL, by an older version, or a job type passing `ctx.progress`
something else holds any JSON there. Read as written, one such row answered 500 to its job's
GET, to every page of its client's list holding it, and to its cancel; and a transition
recording its event (the webhook's body) failed in the worker, so the job could not finish. So
every read that shows them goes through here.
"""
from __future__ import annotations

import json
import math
from typing import Any

from jobs.models import DEFAULT_WEBHOOK_EVENTS, WEBHOOK_EVENT_TYPES

# The longest message a job's error shows: what the runner keeps of an exception's
# (jobs/tasks.py), so that a list item stays within the size docs/api.md gives.
ERROR_MESSAGE_MAX_CHARS = 2000
# The error.type of an error stored without one (a bare string, a list, an object without "type").
UNKNOWN_ERROR_TYPE = "unknown"


def _text(value: Any) -> str:
    """A JSON value as text: a string as it is, nothing as "", anything else as its JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _whole(value: Any) -> int | None:
    """A JSON value as a whole number: an integer, a finite number (its whole part), or a string
    of one; None for anything else (text, null, an object)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def error_shown(error: Any) -> dict[str, str] | None:
    """The job's `error` as {"type", "message"}, both strings; None when it has none. An error
    in another shape is shown rather than hidden (it is why the job failed): a bare string or
    any other value is its message, under type "unknown"."""
    if error is None:
        return None
    if isinstance(error, dict):
        kind, message = error.get("type"), error.get("message")
    else:
        kind, message = None, error
    return {
        "type": _text(kind) or UNKNOWN_ERROR_TYPE,
        "message": _text(message)[:ERROR_MESSAGE_MAX_CHARS],
    }


def error_type(error: Any) -> str | None:
    """The error's type as error_shown shows it (a log line's, a metric's); None without one."""
    shown = error_shown(error)
    return None if shown is None else shown["type"]


def progress_shown(progress: Any) -> dict[str, Any] | None:
    """The job's `progress` as {"current", "total", "message"}; None (no progress known) when it
    has none, or when `current` or `total` is not a number: a made-up figure would be read as
    the job's."""
    if not isinstance(progress, dict):
        return None
    current, total = _whole(progress.get("current")), _whole(progress.get("total"))
    if current is None or total is None:
        return None
    return {"current": current, "total": total, "message": _text(progress.get("message"))}


def metadata_shown(metadata: Any) -> dict[str, str]:
    """The job's `metadata` as an object of strings (what a submission takes): another value of
    a key as its JSON text; anything but an object, none. A list stored there answered 500 to
    the client's list and to the job's cancel, and the job's GET showed another shape than its
    list item (a number as a number, and as text)."""
    if not isinstance(metadata, dict):
        return {}
    return {str(key): _text(value) for key, value in metadata.items()}


def webhook_events_shown(webhook_events: Any) -> list[str]:
    """The events the job's callback receives (what the job shows, and what its transitions
    send): the event types its list names, in their order, each once, leaving out what is no
    event type; a bare string is the one it names. Naming none (null, another value, an empty
    list, only unknown names) is the default, the final events, as for a submission that names
    none: the job has a callback_url, and no submission can ask for no event. Read as stored, a
    number there failed every event the job recorded (`in` a number: TypeError), and a running
    job could not finish; a string was searched as text."""
    named = [webhook_events] if isinstance(webhook_events, str) else webhook_events
    if not isinstance(named, list):
        return list(DEFAULT_WEBHOOK_EVENTS)
    known = list(dict.fromkeys(name for name in named if isinstance(name, str) and name in WEBHOOK_EVENT_TYPES))
    return known or list(DEFAULT_WEBHOOK_EVENTS)
