"""The jobs app's hand-written SQL, each statement with the reason the ORM could not do it.

- The submit's INSERT checks its owner's unfinished-job cap (and quotas) itself, reading
  the owner's count row locked: one round trip (a COUNT, then a save, races and takes two).
- A transition is a conditional UPDATE that returns the row: a compare-and-set on the status
  (the first final state wins) with the job back in the same round trip, where `update()` gives
  a count and a second query reads the row. The start also takes its owner's count row (FOR
  UPDATE; after the job's row, which jobs.transitions.job_start locks first, the order of every
  other writer) and checks the running cap in the same statement, so two workers never both start
  the job that would take an owner past it. A handed-over step's start is one too, so that of
  two messages of one hand-over (or a message and the sweeper taking it for lost) one wins.
- The sweeper takes each owner's waiting jobs in turn, oldest first, as many as its running cap
  leaves room for, skipping rows another sweeper holds (a LATERAL join, `SKIP LOCKED`); it finds
  the owners with jobs waiting by probing an index once per owner (a recursive CTE): the ORM
  has neither.
- The poll reads one job by id and owner from a statement written once: the ORM composing it on
  every request cost more CPU than the rest of the poll (docs/benchmarks.md, "Fixes").
- An owner's events take their ids under an advisory lock of the owner's (jobs/event_log.py):
  the ORM has no advisory locks.
- A submission with an Idempotency-Key tries an advisory lock of the key's (jobs/idempotency.py).
- An owner's counts counted again from its rows (jobs/counts.py) measure its results' and jobs'
  bytes as the triggers do (the text of the JSON, in bytes): the ORM has no byte length.
- A model call's tokens are added to its owner's row of the day by one upsert (INSERT ... ON
  CONFLICT DO UPDATE adding to it): the ORM's upsert (`bulk_create(update_conflicts=True)`)
  can only set the value, not add to it, and `get_or_create` then an `F()` update takes two or
  three round trips, and two workers' first calls of a day race to the insert (one gets an
  IntegrityError to retry).
- A metadata page's first reads walk an owner-first index in order (jobs/metadata_pages.py): the
  ORM has no say in the plan, and PostgreSQL, expecting few of the owner's rows, read all of them.

Statements are written once per database alias (the column lists come from the model), values
are prepared by their fields as `save()` would, and rows come back through `core.db`.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import uuid
from collections.abc import Iterator, Sequence
from datetime import date, datetime
from typing import Any

from django.db import connections

from core.db import columns_of, insert_values, model_from_row
from jobs.models import Job, JobCounts, JobResult, ModelUsage

Status = Job.Status

JOB_COUNTS = JobCounts._meta.db_table
# Still queued and nobody canceled it.
STARTABLE = "status = 'PENDING' AND NOT cancel_requested"
RUNNING = "status IN ({})".format(", ".join(f"'{status}'" for status in sorted(Job.RUNNING_STATUSES)))
NOT_FINAL = "status NOT IN ({})".format(", ".join(f"'{status}'" for status in sorted(Job.FINAL_STATUSES)))


def under_running_cap(alias: str = "default") -> str:
    """The condition that the job's owner runs fewer jobs than the cap (its one parameter; 0:
    no cap), reading the owner's count row locked where the database can lock one row (SQLite
    writes one transaction at a time anyway)."""
    lock = " FOR UPDATE" if connections[alias].features.has_select_for_update else ""
    return (
        f"(%s = 0 OR COALESCE((SELECT running FROM {JOB_COUNTS} c WHERE c.owner_id = {Job._meta.db_table}.owner_id"
        f"{lock}), 0) < %s)"
    )


def under_result_quota(persisting: Sequence[str]) -> str:
    """The condition that the job's type does not persist its result (`persisting`: the names of
    those that do, its first parameters) or its owner's persisted results hold fewer bytes than
    the quota (its last parameter), as counted by the owner's count row."""
    names = ", ".join(["%s"] * len(persisting)) or "NULL"
    return (
        f"(job_name NOT IN ({names}) OR COALESCE((SELECT result_bytes FROM {JOB_COUNTS} c "
        f"WHERE c.owner_id = {Job._meta.db_table}.owner_id), 0) < %s)"
    )


def _prepared(name: str, value: Any, alias: str) -> Any:
    return Job._meta.get_field(name).get_db_prep_save(value, connections[alias])


def in_dispatch(dispatched_at: datetime, alias: str = "default") -> tuple[str, list[Any]]:
    """The condition that the job is still in the dispatch a message was published for (the
    `dispatched_at` the message carries), with its parameter."""
    return "dispatched_at = %s", [_prepared("dispatched_at", dispatched_at, alias)]


def in_hand_over(step: int, dispatched_at: datetime | None, *, started_or_not: bool,
                 alias: str = "default") -> tuple[str, list[Any]]:
    """The condition that the running job, not canceled, has its step `step` handed over last, in
    the hand-over a message was published for (its `dispatched_at`), and that no message has
    started that step yet, unless `started_or_not`; with its parameters."""
    same_dispatch, params = in_dispatch(dispatched_at, alias)
    condition = f"{RUNNING} AND NOT cancel_requested AND next_step = %s AND {same_dispatch}"
    return (condition if started_or_not else f"{condition} AND step_started_at IS NULL"), [step, *params]


def job_insert_below_cap(
    job: Job, *, cap: int, result_quota: int = 0, job_quota: int = 0, alias: str = "default"
) -> bool:
    """INSERT `job` unless its owner already has `cap` unfinished jobs (0: no cap), or, with a
    `result_quota` (a `job_quota`), unless its persisted results (its jobs' payloads and
    metadata) already hold that many bytes; as counted by the owner's JobCounts row (kept by
    triggers). Whether it was inserted. The job's key is made in Python (a UUID); the instance
    is not marked saved (it is not saved again)."""
    columns, values = insert_values(job, alias)
    owner = _prepared("owner", job.owner_id, alias)
    # The count row is read locked: a statement's snapshot does not see a submission of the same
    # owner not committed yet, so two at once both passed at cap - 1. Locked, the second waits
    # for the first's commit and reads the count it left. No new wait: the statement's trigger
    # takes the same lock to count the job anyway; it is only taken before the read.
    lock = " FOR UPDATE" if connections[alias].features.has_select_for_update else ""
    limits = [(column, limit) for column, limit in
              (("unfinished", cap), ("result_bytes", result_quota), ("job_bytes", job_quota)) if limit]
    # The row read once for every limit; without it (no job yet) every count is 0, under each.
    below = " AND ".join(f"{column} < %s" for column, _ in limits)
    condition = f"COALESCE((SELECT {below} FROM {JOB_COUNTS} WHERE owner_id = %s{lock}), TRUE)" if limits else "TRUE"
    params = [*(limit for _, limit in limits), owner] if limits else []
    placeholders = ", ".join(["%s"] * len(values))
    with connections[alias].cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {Job._meta.db_table} ({columns}) SELECT {placeholders} WHERE {condition}",
            [*values, *params],
        )
        return cursor.rowcount == 1


# Read with a job's final state, in the same statement: whether its owner has other jobs not
# final yet (queued, or waiting for a place under its running cap). RETURNING sees the counts
# before the statement's trigger moves them, and the finish takes one from both, so the
# comparison is the same after it.
OWNER_HAS_MORE = f"(SELECT c.unfinished > c.running FROM {JOB_COUNTS} c WHERE c.owner_id = {Job._meta.db_table}.owner_id)"


class Expression(str):
    """A value job_update_if writes as this SQL, not as a parameter (the database's clock: jobs/leases.py)."""


@functools.cache
def _update_statement(assigned: tuple[tuple[str, str], ...], condition: str, also: str, alias: str) -> str:
    quote = connections[alias].ops.quote_name
    assignments = ", ".join(f"{quote(Job._meta.get_field(name).column)} = {value}" for name, value in assigned)
    return (
        f"UPDATE {Job._meta.db_table} SET {assignments} WHERE id = %s AND ({condition}) "
        f"RETURNING {columns_of(Job, alias)}{also}"
    )


def _update_if(
    job_id: uuid.UUID, condition: str, params: Sequence[Any], also: str, alias: str, values: dict[str, Any]
) -> tuple[Any, ...] | None:
    assigned = tuple((name, value if isinstance(value, Expression) else "%s") for name, value in values.items())
    statement = _update_statement(assigned, condition, also, alias)
    prepared = [_prepared(name, value, alias) for name, value in values.items() if not isinstance(value, Expression)]
    with connections[alias].cursor() as cursor:
        cursor.execute(statement, [*prepared, _prepared("id", job_id, alias), *params])
        return cursor.fetchone()


def job_update_if(
    job_id: uuid.UUID, *, condition: str, params: Sequence[Any] = (), alias: str = "default", **values: Any
) -> Job | None:
    """UPDATE the job, setting `values`, if the SQL `condition` (on its columns, built from the
    constants above, with `params`) holds; the job as updated, or None when it did not hold."""
    row = _update_if(job_id, condition, params, "", alias, values)
    return None if row is None else model_from_row(Job, row, alias)


def job_finish_if_not_final(job_id: uuid.UUID, *, alias: str = "default", **values: Any) -> tuple[Job | None, bool]:
    """Write a final state (`values`) unless the job has one: the job as updated (or None), and
    whether its owner has other jobs not final yet."""
    row = _update_if(job_id, NOT_FINAL, (), f", {OWNER_HAS_MORE}", alias, values)
    if row is None:
        return None, False
    return model_from_row(Job, row[:-1], alias), bool(row[-1])


@functools.cache
def _select_statement(alias: str) -> str:
    return f"SELECT {columns_of(Job, alias)} FROM {Job._meta.db_table} WHERE id = %s AND owner_id = %s"


def job_of_owner(job_id: uuid.UUID, owner_id: uuid.UUID, alias: str = "default") -> Job | None:
    """The job with this id if `owner_id` owns it (the poll's one query)."""
    with connections[alias].cursor() as cursor:
        cursor.execute(_select_statement(alias), [_prepared("id", job_id, alias), _prepared("owner", owner_id, alias)])
        row = cursor.fetchone()
    return None if row is None else model_from_row(Job, row, alias)


# Waiting for dispatch (job_waiting's condition).
_WAITING = "j.status = 'PENDING' AND j.dispatched_at IS NULL"
# A waiting job is due at its run_at when it has one, else from its acceptance on (after the
# grace: the request that accepted it may be publishing it right now); one whose deadline has
# passed is left to the deadline sweep, which cancels it.
_DUE = (
    "COALESCE(j.run_at, j.created_at) <= %(now)s AND (j.run_at IS NOT NULL OR j.created_at < %(grace)s)"
    " AND (j.deadline IS NULL OR j.deadline > %(now)s)"
)


def jobs_waiting_claim(*, now: datetime, grace_before: datetime, cap: int, limit: int, owner_id: uuid.UUID | None = None,
                       alias: str = "default") -> list[Job]:
    """Claim (dispatched_at = now) up to `limit` jobs waiting for dispatch that are due, in the
    order they fell due, at most as many of each owner's as its running cap leaves room for
    (`cap`, 0: no cap); only `owner_id`'s when given. Must run inside a transaction, which
    holds the claimed rows until it commits.

    No owner's look takes more than `limit` jobs: it locks every row it takes, and the claim
    keeps `limit` of all the owners' together, so without a cap an owner's whole backlog would be
    read and locked for `limit` of them (100,000 waiting jobs: 85-120 ms a call, and another
    sweeper finding every one of them locked; docs/reliability.md, "The workers' reads")."""
    connection = connections[alias]
    params: dict[str, Any] = {"now": now, "grace": grace_before, "cap": cap, "limit": limit}
    owner_filter = ""
    if owner_id is not None:
        owner_filter, params["owner"] = " AND c.owner_id = %(owner)s", _prepared("owner", owner_id, alias)
    if connection.vendor == "postgresql":
        # One owner's: its count row by key. Every owner's: the owners with a job waiting, each
        # found by one probe of job_waiting (its first column) past the one before, then its
        # count row by key (LIMIT 1: never a hash join of every count row, which the planner chose
        # on a guess at the owners' number); every client's count row, read to find those few,
        # made the sweep a Seq Scan of the clients every 5 s (docs/reliability.md, "The workers' reads").
        owners, waiting_owners = f"{JOB_COUNTS} c", ""
        if owner_id is None:
            owners = (f"(SELECT owner_id FROM waiting_owners WHERE owner_id IS NOT NULL) o CROSS JOIN LATERAL "
                      f"(SELECT * FROM {JOB_COUNTS} c WHERE c.owner_id = o.owner_id LIMIT 1) c")
            waiting_owners = f"""WITH RECURSIVE waiting_owners (owner_id) AS (
                (SELECT j.owner_id FROM {Job._meta.db_table} j WHERE {_WAITING} ORDER BY j.owner_id LIMIT 1)
                UNION ALL
                SELECT (SELECT j.owner_id FROM {Job._meta.db_table} j WHERE {_WAITING} AND j.owner_id > o.owner_id
                        ORDER BY j.owner_id LIMIT 1)
                FROM waiting_owners o WHERE o.owner_id IS NOT NULL
            )"""
        statement = f"""{waiting_owners}
            UPDATE {Job._meta.db_table} SET dispatched_at = %(now)s WHERE id IN (
                SELECT w.id FROM {owners} CROSS JOIN LATERAL (
                    SELECT j.id, COALESCE(j.run_at, j.created_at) AS due FROM {Job._meta.db_table} j
                    WHERE j.owner_id = c.owner_id AND {_WAITING} AND {_DUE}
                    ORDER BY COALESCE(j.run_at, j.created_at)
                    LIMIT LEAST(CASE WHEN %(cap)s = 0 THEN %(limit)s ELSE GREATEST(%(cap)s - c.running, 0) END,
                                %(limit)s)
                    FOR UPDATE OF j SKIP LOCKED
                ) w
                WHERE c.unfinished > c.running{owner_filter}
                ORDER BY w.due LIMIT %(limit)s
            ) RETURNING {columns_of(Job, alias)}"""
    else:  # SQLite: one writer at a time, no row locks; the same choice by window function
        statement = f"""
            UPDATE {Job._meta.db_table} SET dispatched_at = %(now)s WHERE id IN (
                SELECT id FROM (
                    SELECT j.id, COALESCE(j.run_at, j.created_at) AS due, c.running,
                           ROW_NUMBER() OVER (PARTITION BY j.owner_id ORDER BY COALESCE(j.run_at, j.created_at)) AS place
                    FROM {Job._meta.db_table} j JOIN {JOB_COUNTS} c ON c.owner_id = j.owner_id
                    WHERE j.status = 'PENDING' AND j.dispatched_at IS NULL AND {_DUE}{owner_filter}
                ) w WHERE %(cap)s = 0 OR w.place <= %(cap)s - w.running
                ORDER BY w.due LIMIT %(limit)s
            ) RETURNING {columns_of(Job, alias)}"""
    field = Job._meta.get_field("dispatched_at")
    params["now"] = field.get_db_prep_save(now, connection)
    params["grace"] = field.get_db_prep_save(grace_before, connection)
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return sorted((model_from_row(Job, row, alias) for row in cursor.fetchall()),
                      key=lambda job: job.run_at or job.created_at)


# The first key of the owners' event locks; the second is the owner's id folded to 31 bits (two
# owners that share it only wait on each other).
_EVENTS_LOCK_SPACE = 0x6A6F6273  # "jobs"


def owner_events_lock(owner_id: uuid.UUID, alias: str = "default") -> None:
    """Take the owner's event lock until the transaction ends (PostgreSQL; SQLite lets one
    transaction write at a time and needs none)."""
    connection = connections[alias]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_EVENTS_LOCK_SPACE, owner_id.int % 2**31])


@contextlib.contextmanager
def index_walks_only(alias: str = "default") -> Iterator[None]:
    """Plans of index scans only (neither sequential nor bitmap scans), for the transaction's
    statements meanwhile (PostgreSQL): the caller's must be, its transaction open."""
    with connections[alias].cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('enable_seqscan'), current_setting('enable_bitmapscan'), "
            "set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true)"
        )
        seqscan, bitmapscan, _, _ = cursor.fetchone()
        yield
        # Back as they were for the rest of an enclosing transaction (an error rolls them back).
        cursor.execute("SELECT set_config('enable_seqscan', %s, true), set_config('enable_bitmapscan', %s, true)",
                       [seqscan, bitmapscan])


def idempotency_key_lock_try(owner_id: uuid.UUID, key: str, alias: str = "default") -> bool:
    """Take the lock of `owner_id`'s `key` until the transaction ends, without waiting: False
    when another transaction holds it. SQLite lets one transaction write at a time and needs
    none (a second request waits for the first's commit, then replays it).

    The lock's key is the owner's id and the key hashed to 64 bits, in PostgreSQL's one-key
    form, a key space apart from the two-key form of the owners' event locks."""
    connection = connections[alias]
    if connection.vendor != "postgresql":
        return True
    digest = hashlib.blake2b(f"{owner_id}\n{key}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [int.from_bytes(digest, "big", signed=True)])
        return cursor.fetchone()[0]


def model_usage_add(owner_id: uuid.UUID, *, day: date, tokens: int, alias: str = "default") -> None:
    """Add `tokens` to the owner's usage row of `day`, made if it is the day's first; atomic
    under any number of workers adding at once (the unique (owner, day) index arbitrates the
    insert, and the update adds to the row as committed)."""
    table = ModelUsage._meta.db_table
    with connections[alias].cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (owner_id, day, tokens) VALUES (%s, %s, %s) "
            f"ON CONFLICT (owner_id, day) DO UPDATE SET tokens = {table}.tokens + EXCLUDED.tokens",
            [
                ModelUsage._meta.get_field("owner").get_db_prep_save(owner_id, connections[alias]),
                ModelUsage._meta.get_field("day").get_db_prep_save(day, connections[alias]),
                tokens,
            ],
        )


# A persisted result's bytes, as the results' triggers count them (migration 0004); a job's
# payload's and metadata's, the same way (migration 0024).
_RESULT_BYTES = {
    "postgresql": "COALESCE(octet_length(result::text), 0)",
    "sqlite": "COALESCE(length(CAST(result AS BLOB)), 0)",
}


def owner_counts_counted(owner_id: uuid.UUID, alias: str = "default") -> tuple[int, int, int, int]:
    """The owner's unfinished jobs, running jobs, persisted results' bytes and its jobs' payloads'
    and metadata's bytes, counted from the rows (what its JobCounts row holds, kept by triggers)."""
    connection = connections[alias]
    jobs = Job._meta.db_table
    unfinished = ", ".join(f"'{status}'" for status in sorted(Job.ACTIVE_STATUSES))
    owner = _prepared("owner", owner_id, alias)
    job_bytes = " + ".join(_RESULT_BYTES[connection.vendor].replace("result", column) for column in ("payload", "metadata"))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT (SELECT COUNT(*) FROM {jobs} WHERE owner_id = %s AND status IN ({unfinished})), "
            f"(SELECT COUNT(*) FROM {jobs} WHERE owner_id = %s AND {RUNNING}), "
            f"(SELECT COALESCE(SUM({_RESULT_BYTES[connection.vendor]}), 0) FROM {JobResult._meta.db_table} "
            "WHERE owner_id = %s), "
            f"(SELECT COALESCE(SUM({job_bytes}), 0) FROM {jobs} WHERE owner_id = %s)",
            [owner, owner, owner, owner],
        )
        jobs_unfinished, jobs_running, result_bytes, job_bytes_counted = cursor.fetchone()
    return int(jobs_unfinished), int(jobs_running), int(result_bytes), int(job_bytes_counted)
