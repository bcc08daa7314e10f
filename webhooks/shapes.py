"""An endpoint's stored `event_types` and `headers` in the shapes the API documents, whatever the
row holds.

The code writes `event_types` as a sorted list of event types and `headers` as an object of
strings, but the columns are JSON: a row written by hand in SQL or by an older version holds any
JSON there. Read as written, a number in `event_types` failed every submission and every event of
its client (`in` a number, iterating a number: TypeError), and a string subscribed to its letters;
`headers` that were no object failed every delivery to the endpoint, and its admin page. So every
read that uses or shows them goes through here.
"""
from __future__ import annotations

from typing import Any

from webhooks.events import DEFAULT_ENDPOINT_EVENT_TYPES, ENDPOINT_EVENT_TYPES


def event_types_shown(event_types: Any) -> list[str]:
    """What the endpoint receives: the event types its list names, sorted, each once, leaving
    out what is no event type; a bare string is the one it names. Naming none (null, another
    value, an empty list, only unknown names) is the default, as for an endpoint created naming
    none: no client can subscribe an endpoint to nothing."""
    named = [event_types] if isinstance(event_types, str) else event_types
    if not isinstance(named, list):
        return sorted(DEFAULT_ENDPOINT_EVENT_TYPES)
    known = {name for name in named if isinstance(name, str) and name in ENDPOINT_EVENT_TYPES}
    return sorted(known or DEFAULT_ENDPOINT_EVENT_TYPES)


def headers_shown(headers: Any) -> dict[str, str]:
    """The headers every delivery to the endpoint carries: those of its object whose name and
    value are strings; none for anything else."""
    if not isinstance(headers, dict):
        return {}
    return {name: value for name, value in headers.items() if isinstance(name, str) and isinstance(value, str)}
