"""How the service writes a moment in its JSON (webhook bodies, endpoints, reasons): ISO 8601 with
"Z" for UTC, as DRF writes the API's datetime fields."""
from __future__ import annotations

from datetime import datetime


def utc_iso(moment: datetime) -> str:
    """`moment` (aware, in UTC) as ISO 8601 ending in "Z": 2026-12-04T12:30:00.123456Z."""
    return moment.isoformat().replace("+00:00", "Z")
