"""A pause after a dependency fails: for a few seconds a process stops asking it and does without
(the rate limiter decides alone, a submission leaves its job to the sweeper). A dependency that
hangs makes each call wait out its timeout; paused, that wait falls on one call per process in
that time, not on every call."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any


class PauseAfterFailure:
    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._until = float("-inf")

    def failed(self) -> None:
        """A call failed: do without the dependency for `seconds` from now."""
        self._until = self._clock() + self.seconds

    def paused(self) -> bool:
        return self._clock() < self._until

    def attempt(
        self,
        call: Callable[[], object],
        logger: logging.Logger,
        failing: str,
        *args: Any,
    ) -> bool:
        """Make `call` unless paused; when it raises, start the pause and log `failing` % `args`
        (a warning, with the traceback, on the caller's `logger`). Whether the call was made and
        returned. Any Exception counts: a broker's client raises many types, and every one means
        "not done"."""
        if self.paused():
            return False
        try:
            call()
        except Exception:  # see above: every type means "not done"
            self.failed()
            logger.warning(failing, *args, exc_info=True, stacklevel=2)
            return False
        return True


# After a publish from this process fails, how long it publishes nothing it can leave to a
# periodic task: new jobs go to the sweeper, a drain of the due deliveries to the dispatcher, a
# canceled job's revoke to its REVOKED row. A broker that is down or hung costs each publish its
# timeout (CELERY_BROKER_CONNECTION_TIMEOUT, and kombu's retries: seconds), so while it is out
# that wait falls on one request per process in that time, not on each one (docs/reliability.md,
# 3). One pause for the jobs' and the webhooks' publishes: they go to the same broker.
BROKER_RETRY_SECONDS = 5.0
broker = PauseAfterFailure(BROKER_RETRY_SECONDS)
