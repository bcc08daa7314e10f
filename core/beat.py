"""Celery beat's scheduler as the service runs it: a periodic task it cannot send (the broker
unreachable, or `make run`'s disk full) is one WARNING line per task a minute.

Celery's own logs an ERROR with the exception's traceback and the stack's (about 100 lines) at
each try: the service's four periodic tasks, every 5 s, buried the rest of the log for as long as
the outage lasted. Beat tries again at each due time as before; the figure that tells an outage
is `jobapi_periodic_task_runs_total` (the BeatNotRunning alert), and the runbook's line is this
one (docs/deployment.md)."""
from __future__ import annotations

import logging
from typing import Any

from celery.beat import PersistentScheduler, ScheduleEntry

from core import log_volume
from core.log_database_errors import first_line

logger = logging.getLogger(__name__)


class Scheduler(PersistentScheduler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._unsent: dict[str, log_volume.Occasional] = {}
        super().__init__(*args, **kwargs)

    def apply_entry(self, entry: ScheduleEntry, producer: Any = None) -> None:
        # DEBUG, not Celery's INFO: the periodic tasks are due every 5 s, four lines every 5 s (some
        # 70,000 a day, idle or not) which buried, at LOG_LEVEL=INFO, the lines INFO is for (a
        # request, a job's transition, a delivery attempt).
        logger.debug("Scheduler: Sending due task %s (%s)", entry.name, entry.task)
        try:
            self.apply_async(entry, producer=producer, advance=False)
        except Exception as exc:  # noqa: BLE001 (the broker's client raises many types; each means "not sent")
            unsent = self._unsent.setdefault(entry.name, log_volume.Occasional(logger))
            unsent.warning("Could not send periodic task %s: %s", entry.name, first_line(exc))
