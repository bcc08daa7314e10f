"""A periodic task's rows, each acted on apart: one that raises (a database error on that row, a
bug in a hook) is logged and skipped, and the run goes on with the others. A loop that let it
raise ended the run there, and the run after it, every run: the rows after the bad one were
never acted on (the abandoned-job rule failed no stale job after it, run after run).

A rule reads its rows page after page (`pages`) from a random key, in primary-key order, so that
rows that raise at every run neither fill every run's read nor hide the same rows from every run.
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from celery.exceptions import Ignore
from django.db import connection
from django.db.models import QuerySet

from core.log_volume import CountedPerKey

logger = logging.getLogger(__name__)

Row = TypeVar("Row")

# The rows a page reads (one SELECT), and the most a run reads of one of a rule's queries: what a
# run read before it read in pages, one read of 500, so that a run lasts no longer than it did
# (a stale job whose finish raised cost about 10 ms, 20 ms on a loaded machine: 5-10 s a query).
PAGE_ROWS = 500
MOST_ROWS_READ = 500

# One ERROR line per row a quarter of an hour (per process), with how many times it raised since:
# a row that raises at every run of a task run every 5 s wrote 180 lines a quarter of an hour.
_told = CountedPerKey(seconds=900.0)


def _itself(row: Any) -> Any:
    return row


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

    def each(self, rows: Iterable[Row], act: Callable[[Row], int], *, key: Callable[[Row], Any] = _itself) -> int:
        """`act` on each row; the sum of what it returned for the rows that did not raise. `key`:
        what names a row in the log (its primary key)."""
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

    def pages(self, rows: QuerySet[Any], act: Callable[[Any], int], *, key: Callable[[Any], Any] = _itself,
              page_rows: int = PAGE_ROWS, most_rows: int = MOST_ROWS_READ, start: uuid.UUID | None = None) -> int:
        """`each` over at most `most_rows` of `rows` (the rule's query, of rows keyed by UUIDs), read
        `page_rows` at a time in primary-key order from `start` (by default a random key, each
        run its own), each page after the last key of the one before, round to the lowest key
        once the highest is passed; the sum of what `each` returned. `key`: a row's primary key.

        One read of the first rows came back with the same rows at every run while they kept
        raising: with more of them than a read (501 stale jobs of one type whose finish raises,
        for a read of 500), none of the type's other jobs was ever acted on, the run failing every
        time. Here a run goes on past them: with no more rows than `most_rows`, every run reads
        them all; with more, each run reads another `most_rows` of them, so that every row comes
        up (a run starting from the lowest key at every run left those with the highest waiting
        for good). The order is the key's, not the rows' own (their age): the key is what a page
        resumes from, and the rule's query keeps its index (the partial one of its rows), its
        matches sorted, not a walk of every row's key."""
        start = uuid.uuid4() if start is None else start
        done, read = 0, 0
        for part in (rows.filter(pk__gte=start), rows.filter(pk__lt=start)):
            after = None
            while read < most_rows:
                wanted = min(page_rows, most_rows - read)
                page = list((part if after is None else part.filter(pk__gt=after)).order_by("pk")[:wanted])
                read += len(page)
                done += self.each(page, act, key=key)
                if len(page) < wanted:
                    break
                after = key(page[-1])
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
