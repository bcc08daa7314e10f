"""A periodic task's rows, each acted on apart: one that raises (a database error on that row, a
bug in a hook) is logged and skipped, and the run goes on with the others. A loop that let it
raise ended the run there, and the run after it, every run: the rows after the bad one were
never acted on (the abandoned-job rule failed no stale job after it, run after run).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TypeVar

from celery.exceptions import Ignore
from django.db import connection

from core.log_volume import CountedPerKey

logger = logging.getLogger(__name__)

Row = TypeVar("Row")

# One ERROR line per row a quarter of an hour (per process), with how many times it raised since:
# a row that raises at every run of a task run every 5 s wrote 180 lines a quarter of an hour.
_told = CountedPerKey(seconds=900.0)


class RowsFailed(Ignore):
    """A run's end once every row was tried, some of which raised: the run does not count as
    having run to its end (jobapi_periodic_task_failures_total counts it, and its last success
    does not move: the PeriodicTaskFailing alert). An Ignore, so that Celery writes no ERROR
    with a traceback for every run beside the rows' own lines."""


class RowsApart:
    """Acts on rows apart (`each`), then ends the run (`end`): RowsFailed if any row raised."""

    def __init__(self, *, task: str, what: str) -> None:
        self._task, self._what = task, what  # for the log: "jobs.fail_abandoned", "job"
        self.failed = 0

    def each(self, rows: Iterable[Row], act: Callable[[Row], int], *, key: Callable[[Row], object] = str) -> int:
        """`act` on each row; the sum of what it returned for the rows that did not raise. `key`:
        what names a row in the log (its id)."""
        done = 0
        for row in rows:
            try:
                done += act(row)
            except Exception as error:  # anything the row's action raises: the others go on
                if _connection_broken():
                    raise  # the database's, not the row's: the task fails once, as before
                self.failed += 1
                if times := _told.due(f"{self._task} {key(row)}"):
                    logger.error("%s: acting on %s %s raised %s (%s time(s) since this %s's previous line); "
                                 "the run goes on with the others", self._task, self._what, key(row),
                                 type(error).__name__, times, self._what, exc_info=error)
        return done

    def end(self) -> None:
        if self.failed:
            raise RowsFailed(f"{self.failed} {self._what}(s) raised")


def _connection_broken() -> bool:
    """After a row raised: whether the database connection serves no query any more (PostgreSQL
    restarted, the network cut) or its transaction can only roll back (a savepoint's rollback
    failed on it). Taken for the row's, every row after it raised the same, one ERROR line and
    traceback each (500 of a run), none of which said the database was gone."""
    return connection.needs_rollback or not connection.is_usable()
