"""How the service writes a moment in its JSON (webhook bodies, endpoints, reasons): ISO 8601 with
"Z" for UTC, as DRF writes the API's datetime fields; and how it reads one it is sent (a body's
date-time fields, the lists' date-time filters), each the same way."""
from __future__ import annotations

import re
from datetime import datetime

from django.utils.dateparse import parse_datetime

# A date-time's UTC offset, at its end: ±HH, ±HHMM, ±HH:MM, or ±HH:MM:SS (Python's isoformat
# writes seconds for a zone's historical offset). Python and Django read each part modulo its
# next one: +01:60 was +02:00, +00:00:60 was +00:01.
_OFFSET = re.compile(r"[+-](?P<hours>\d{2})(?::?(?P<minutes>\d{2}))?(?::?(?P<seconds>\d{2})(?P<fraction>[.,]\d+)?)?\Z")


def utc_iso(moment: datetime) -> str:
    """`moment` (aware, in UTC) as ISO 8601 ending in "Z": 2026-12-04T12:30:00.123456Z."""
    return moment.isoformat().replace("+00:00", "Z")


def timestamp_parse(value: str) -> datetime | None:
    """`value` as the API reads a date-time (docs/api.md, "Dates and times"), or None when it is
    not one: RFC 3339's date-time (section 5.6) and the other ISO 8601 forms Django reads (a
    date alone, no offset: UTC), with a lowercase "z" (RFC 3339's note), and none with an offset
    no clock shows: hours past 23, minutes or seconds past 59, a fraction of a second."""
    if value.endswith("z"):
        value = f"{value[:-1]}Z"
    try:
        parsed = parse_datetime(value)
    except ValueError:  # a day, hour or second out of range (23:59:60), an offset of a day or more
        return None
    if parsed is None or parsed.tzinfo is None or value.endswith("Z"):
        return parsed
    offset = _OFFSET.search(value)
    if offset is None:  # as parse_datetime read it: it found an offset
        return None
    minutes, seconds = offset["minutes"] or "00", offset["seconds"] or "00"
    if int(offset["hours"]) > 23 or int(minutes) > 59 or int(seconds) > 59 or offset["fraction"]:
        return None
    return parsed
