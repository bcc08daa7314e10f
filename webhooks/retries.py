"""The retry schedule: when a delivery's next attempt is due, with jitter."""
from __future__ import annotations

import random
from collections.abc import Sequence

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

