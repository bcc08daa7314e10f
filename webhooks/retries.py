"""The retry schedule: when the next attempt is due, with jitter, and Retry-After parsing."""
from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime
from email.utils import parsedate_to_datetime

# Delays are spread by up to this fraction either way, so deliveries that failed together
# (a receiver outage) do not all come back in the same second.
JITTER_FRACTION = 0.1


def retry_delay_seconds(
    *, attempts_made: int, schedule: Sequence[int], rng: random.Random | None = None
) -> float | None:
    """Seconds to wait before the next attempt after `attempts_made` attempts; None when the
    schedule is exhausted. `schedule[i]` is the delay before attempt i + 1."""
    if attempts_made >= len(schedule):
        return None
    base = float(schedule[attempts_made])
    jitter = (rng or random).uniform(-JITTER_FRACTION, JITTER_FRACTION)
    return max(0.0, base * (1 + jitter))


def retry_after_seconds(value: str | None, *, now: datetime, max_seconds: float) -> float | None:
    """A `Retry-After` header (seconds or an HTTP date) as seconds within [0, max_seconds];
    None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = (when - now).total_seconds()
    return min(max(seconds, 0.0), float(max_seconds))
