"""The one reader of a `Retry-After` header (RFC 9110 section 10.2.3), for every server we call:
webhook receivers and the model provider."""
from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


def retry_after_seconds(
    value: str | None, *, now: datetime | None = None, max_seconds: float = math.inf
) -> float | None:
    """A `Retry-After` value, delay-seconds or an HTTP-date, as seconds within [0, max_seconds];
    None when absent or unreadable (a receiver's header is never trusted to be well formed)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        seconds = float(value)  # a huge number of digits is inf, then the cap
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # "-0000": the RFC's dates are GMT anyway
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), float(max_seconds))
