"""The jobs app's hand-written SQL, each statement with the reason the ORM could not do it.

- The submit's INSERT checks its owner's unfinished-job cap itself: atomic without a lock, one
  round trip (a COUNT, then a save, races and takes two).
- A transition is a conditional UPDATE that returns the row: a compare-and-set on the status
  (the first final state wins) with the job back in the same round trip, where `update()` gives
  a count and a second query reads the row.
- The poll reads one job by id and owner from a statement written once: the ORM composing it on
  every request cost more CPU than the rest of the poll (docs/benchmarks.md, "Fixes").

Statements are written once per database alias (the column lists come from the model), values
are prepared by their fields as `save()` would, and rows come back through `core.db`.
"""
from __future__ import annotations

import functools
import uuid
from typing import Any

from django.db import connections

from core.db import columns_of, insert_values, model_from_row
from jobs.models import Job, UnfinishedJobCount

Status = Job.Status

# Still queued and nobody canceled it.
STARTABLE = "status = 'PENDING' AND NOT cancel_requested"
# ... and it wants no job.started webhook: the events are a JSON list of fixed lower-case names.
STARTABLE_WITHOUT_EVENT = f"{STARTABLE} AND CAST(webhook_events AS TEXT) NOT LIKE '%%\"job.started\"%%'"
NOT_FINAL = "status NOT IN ({})".format(", ".join(f"'{status}'" for status in sorted(Job.FINAL_STATUSES)))


def _prepared(name: str, value: Any, alias: str) -> Any:
    return Job._meta.get_field(name).get_db_prep_save(value, connections[alias])


def job_insert_below_cap(job: Job, *, cap: int, alias: str = "default") -> bool:
    """INSERT `job` unless its owner already has `cap` unfinished jobs (0: no cap), as counted
    by the owner's UnfinishedJobCount row (kept by triggers); whether it was inserted. The job's
    key is made in Python (a UUID); the instance is not marked saved (it is not saved again)."""
    columns, values = insert_values(job, alias)
    condition, params = "TRUE", []
    if cap:
        condition = (
            f"COALESCE((SELECT unfinished FROM {UnfinishedJobCount._meta.db_table}"
            " WHERE owner_id = %s), 0) < %s"
        )
        params = [_prepared("owner", job.owner_id, alias), cap]
    placeholders = ", ".join(["%s"] * len(values))
    with connections[alias].cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {Job._meta.db_table} ({columns}) SELECT {placeholders} WHERE {condition}",
            [*values, *params],
        )
        return cursor.rowcount == 1


@functools.cache
def _update_statement(names: tuple[str, ...], condition: str, alias: str) -> str:
    quote = connections[alias].ops.quote_name
    assignments = ", ".join(f"{quote(Job._meta.get_field(name).column)} = %s" for name in names)
    return (
        f"UPDATE {Job._meta.db_table} SET {assignments} WHERE id = %s AND ({condition}) "
        f"RETURNING {columns_of(Job, alias)}"
    )


def job_update_if(job_id: uuid.UUID, *, condition: str, alias: str = "default", **values: Any) -> Job | None:
    """UPDATE the job, setting `values`, if the SQL `condition` (on its columns, one of the
    constants above) holds; the job as updated, or None when it did not hold."""
    statement = _update_statement(tuple(values), condition, alias)
    params = [_prepared(name, value, alias) for name, value in values.items()]
    with connections[alias].cursor() as cursor:
        cursor.execute(statement, [*params, _prepared("id", job_id, alias)])
        row = cursor.fetchone()
    return None if row is None else model_from_row(Job, row, alias)


@functools.cache
def _select_statement(alias: str) -> str:
    return f"SELECT {columns_of(Job, alias)} FROM {Job._meta.db_table} WHERE id = %s AND owner_id = %s"


def job_of_owner(job_id: uuid.UUID, owner_id: uuid.UUID, alias: str = "default") -> Job | None:
    """The job with this id if `owner_id` owns it (the poll's one query)."""
    with connections[alias].cursor() as cursor:
        cursor.execute(_select_statement(alias), [_prepared("id", job_id, alias), _prepared("owner", owner_id, alias)])
        row = cursor.fetchone()
    return None if row is None else model_from_row(Job, row, alias)
