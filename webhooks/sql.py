"""The webhooks app's hand-written SQL, each statement with the reason the ORM could not do it.

- The claim: `FOR UPDATE SKIP LOCKED` so two workers never send the same delivery, and on
  PostgreSQL the whole claim (rows, interrupted attempts closed, new attempts opened, bodies and
  secrets read) in one statement and one round trip; through the ORM it took five round trips
  and most of an attempt's CPU (docs/benchmarks.md, "Fixes").
- An event and its deliveries inserted in one statement on PostgreSQL: a job's final
  transition waits on it (about a quarter of its CPU). Each endpoint's delivery holds its
  endpoint FOR KEY SHARE, which the ORM cannot take (its FOR SHARE would queue the event behind
  the endpoint's health updates).
- The secrets that sign an owner's deliveries, joined to the events in one query.
- Attempt outcomes as one UPDATE from a VALUES list: `bulk_update` spent more time building its
  CASE expressions than the database spent running them, and executemany is a round trip each.
- An owner's row held FOR KEY SHARE (`owner_hold`): the ORM locks a row FOR UPDATE or FOR NO
  KEY UPDATE only.
- An endpoint's rescheduled deliveries likewise: `bulk_update` of 500 took 630 ms (PostgreSQL
  tries each row against every branch of its CASE), the VALUES list a few.
"""
from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Sequence
from datetime import datetime

from django.db import connection

from core.db import insert_values
from core.models import Client
from webhooks import shapes
from webhooks.models import Delivery, DeliveryAttempt, Endpoint, Event, SigningSecret

# The secrets that sign an owner's deliveries, on its signing secrets aliased `s`: the current
# one, then any rotated-out one still inside its overlap window (`{now}`: the time's placeholder).
SECRET_IN_USE = "(s.expires_at IS NULL OR s.expires_at > {now})"
SECRETS_CURRENT_FIRST = "s.expires_at IS NOT NULL, s.created_at DESC, s.id DESC"

INTERRUPTED = "Interrupted: the worker sending this attempt stopped."

# A delivery (aliased `c`) that its endpoint being disabled holds: any but a test event's, whose
# subject is the endpoint it goes to (webhooks.endpoints.endpoint_test), so that a client can try
# a disabled endpoint's receiver before enabling it again.
HELD_WHILE_DISABLED = "c.subject_id <> c.endpoint_id"

# One row per claimed delivery: (delivery id, the URL its attempt goes to, owner id, endpoint id or None, the endpoint's
# custom headers, attempt id, attempt number, webhook-id, body, the secrets that sign it, sealed
# as stored (webhooks/sealing.py: unsealed in Python when signing): the current one first, then
# any rotated-out one still inside its overlap window; none before the owner's first delivery;
# the endpoint's rate limit or None).
ClaimRow = tuple[
    int, str, uuid.UUID, uuid.UUID | None, dict[str, str], int, int, str, bytes, list[str], float | None
]


def event_insert_with_deliveries(event: Event, deliveries: Sequence[Delivery]) -> list[Delivery]:
    """INSERT `event` and its `deliveries` and set their keys; the deliveries written. An
    endpoint's is written only while the endpoint exists, and holds it (FOR KEY SHARE, what the
    foreign key's own check takes at commit) until the caller's transaction ends: one deleted
    after its subscribers were read failed the whole transaction at commit (a job's transition
    with it), and a deletion waits for the event, then cancels its delivery (webhooks/endpoints.py).
    On PostgreSQL one statement (one INSERT inside WITH per row); SQLite has no INSERT inside
    WITH, nor a second writer: a save per row there."""
    if connection.vendor != "postgresql" or not deliveries:
        event.save(force_insert=True)
        for delivery in deliveries:
            delivery.event = event
            delivery.save(force_insert=True)
        return list(deliveries)
    event_columns, event_values = insert_values(event)
    statements = [
        f"WITH event AS (INSERT INTO {Event._meta.db_table} ({event_columns}) "
        f"VALUES ({', '.join(['%s'] * len(event_values))}) RETURNING id)"
    ]
    params = list(event_values)
    for index, delivery in enumerate(deliveries):
        columns, values = insert_values(delivery, exclude="event")
        held = "" if delivery.endpoint_id is None else (
            f" WHERE EXISTS (SELECT FROM {Endpoint._meta.db_table} ep WHERE ep.id = %s FOR KEY SHARE)"
        )
        statements.append(
            f", d{index} AS (INSERT INTO {Delivery._meta.db_table} (event_id, {columns}) "
            f"SELECT event.id, {', '.join(['%s'] * len(values))} FROM event{held} RETURNING id, event_id)"
        )
        params += [*values, *([delivery.endpoint_id] if held else [])]
    selects = "".join(f" UNION ALL SELECT {index}, id, event_id FROM d{index}" for index in range(len(deliveries)))
    written = []
    with connection.cursor() as cursor:
        cursor.execute(" ".join(statements) + f" SELECT -1, NULL, id FROM event{selects} ORDER BY 1", params)
        for index, delivery_id, event_id in cursor.fetchall():
            event.pk = event_id
            if index >= 0:
                deliveries[index].pk = delivery_id
                deliveries[index].event = event
                written.append(deliveries[index])
    return written


def owner_hold(owner_id: uuid.UUID, *, unless_deleting: bool = False) -> bool:
    """Hold the owner's row FOR KEY SHARE until the transaction ends: False when it is gone, or,
    `unless_deleting`, when its deletion holds it (core.services.client_delete, the only FOR
    UPDATE of a client), not waiting for it; or while a rename commits (its name is unique, so
    PostgreSQL takes the same lock for the UPDATE), a few milliseconds: what the writer skips is
    done again, a failing endpoint disabled at its next failure, a rescheduling started again by
    the dispatcher (reschedule.endpoints_reschedule_stalled, REDISPATCH_AFTER_SECONDS later).

    FOR KEY SHARE is what a foreign key's check takes at commit, of a row added for the owner or
    one written twice in the transaction. A writer that takes it only then, holding the owner's
    endpoints or deliveries, meets a deletion that holds the owner and goes on to delete those: a
    deadlock. Taken first, the deletion waits for the writer, or the writer for the deletion;
    refused (`unless_deleting`, for a writer that holds such rows already), the writer writes
    neither. SQLite lets one transaction write at a time: True there."""
    if connection.vendor != "postgresql":
        return True
    skip_locked = " SKIP LOCKED" if unless_deleting else ""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT 1 FROM {Client._meta.db_table} WHERE id = %s FOR KEY SHARE{skip_locked}", [owner_id])
        return cursor.fetchone() is not None


def events_to_send(*, event_ids: Collection[int], now: datetime) -> dict[int, tuple[str, bytes, list[str]]]:
    """Each event's webhook-id and body, with the secrets that sign it (sealed, current first), in one
    query: the events joined to their owners' secrets, a row per secret."""
    if not event_ids:
        return {}
    placeholders = ", ".join(["%s"] * len(event_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT e.id, e.message_id, e.body, s.secret
            FROM {Event._meta.db_table} e
            LEFT JOIN {SigningSecret._meta.db_table} s
              ON s.owner_id = e.owner_id AND s.endpoint_id IS NULL AND {SECRET_IN_USE.format(now="%s")}
            WHERE e.id IN ({placeholders})
            ORDER BY e.id, {SECRETS_CURRENT_FIRST}
            """,
            [connection.ops.adapt_datetimefield_value(now), *event_ids],
        )
        rows = cursor.fetchall()
    events: dict[int, tuple[str, bytes, list[str]]] = {}
    for event_id, message_id, body, secret in rows:
        if event_id not in events:
            events[event_id] = (message_id, bytes(body), [])
        if secret is not None:
            events[event_id][2].append(secret)
    return events


def claim_postgresql(
    *, scope_sql: str, scope_params: dict[str, object], limit: int, token: uuid.UUID, now: datetime,
    due_by: datetime, claimed_until: datetime,
) -> list[ClaimRow]:
    """The claim as one statement in autocommit, atomic as any single statement is: up to
    `limit` due, unclaimed deliveries matching `scope_sql` (on deliveries aliased `c`) take the
    claim; attempts a dead worker left open are closed as interrupted; the new attempts are
    opened, each with the URL it goes to (its endpoint's current one, or the callback_url); the
    events are read back with their secrets (the endpoint's, or the client's for a callback_url)
    and their endpoint's headers and rate limit. A delivery whose endpoint was
    disabled after it was published is held (state endpoint_disabled) instead of claimed, unless it is
    a test event's."""
    sql = f"""
        WITH held AS (
            UPDATE {Delivery._meta.db_table} d SET state = %(held)s, dispatched_at = NULL
            WHERE d.id IN (
                SELECT c.id FROM {Delivery._meta.db_table} c
                JOIN {Endpoint._meta.db_table} ep ON ep.id = c.endpoint_id AND NOT ep.enabled
                WHERE {scope_sql} AND c.state = %(pending)s AND {HELD_WHILE_DISABLED}
                FOR UPDATE OF c SKIP LOCKED
            )
        ), claimed AS (
            UPDATE {Delivery._meta.db_table} d
            SET attempt_count = d.attempt_count + 1, claim_token = %(token)s,
                claimed_until = %(claimed_until)s
            WHERE d.id IN (
                SELECT c.id FROM {Delivery._meta.db_table} c
                WHERE {scope_sql} AND c.state = %(pending)s AND c.next_attempt_at <= %(due_by)s
                  AND (c.claimed_until IS NULL OR c.claimed_until < %(now)s)
                  AND NOT EXISTS (
                      SELECT 1 FROM {Endpoint._meta.db_table} ep
                      WHERE ep.id = c.endpoint_id AND NOT ep.enabled AND {HELD_WHILE_DISABLED}
                  )
                ORDER BY c.created_at, c.id
                LIMIT {int(limit)}
                FOR UPDATE SKIP LOCKED
            )
            RETURNING d.id, d.event_id, d.owner_id, d.endpoint_id, d.url, d.attempt_count, d.created_at
        ), interrupted AS (
            UPDATE {DeliveryAttempt._meta.db_table} a SET finished_at = %(now)s, error = %(interrupted)s
            FROM claimed c
            WHERE a.delivery_id = c.id AND c.attempt_count > 1 AND a.finished_at IS NULL
        ), attempts AS (
            INSERT INTO {DeliveryAttempt._meta.db_table}
                (delivery_id, endpoint_id, number, started_at, response_body, error, url)
            SELECT c.id, c.endpoint_id, c.attempt_count, %(now)s, '', '', COALESCE(ep.url, c.url)
            FROM claimed c LEFT JOIN {Endpoint._meta.db_table} ep ON ep.id = c.endpoint_id
            RETURNING id, delivery_id, url
        )
        SELECT c.id, a.url, c.owner_id, c.endpoint_id, ep.headers, a.id, c.attempt_count, e.message_id, e.body,
               ARRAY(
                   SELECT s.secret FROM {SigningSecret._meta.db_table} s
                   WHERE s.owner_id = c.owner_id AND s.endpoint_id IS NOT DISTINCT FROM c.endpoint_id
                     AND {SECRET_IN_USE.format(now="%(now)s")}
                   ORDER BY {SECRETS_CURRENT_FIRST}
               ),
               ep.rate_limit_per_second
        FROM claimed c
        JOIN attempts a ON a.delivery_id = c.id
        JOIN {Event._meta.db_table} e ON e.id = c.event_id
        LEFT JOIN {Endpoint._meta.db_table} ep ON ep.id = c.endpoint_id
        ORDER BY c.created_at, c.id
    """
    params = {
        **scope_params, "token": token, "claimed_until": claimed_until, "pending": Delivery.State.PENDING,
        "held": Delivery.State.ENDPOINT_DISABLED, "due_by": due_by, "now": now, "interrupted": INTERRUPTED,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [(*row[:4], _headers(row[4]), *row[5:8], bytes(row[8]), *row[9:]) for row in cursor.fetchall()]


def _headers(value: object) -> dict[str, str]:
    """An endpoint's headers column as read by a raw cursor (JSON text or already parsed)."""
    return shapes.headers_shown(json.loads(value) if isinstance(value, str) else value)


def attempts_finish(
    outcomes: Sequence[tuple[int, datetime, int, int | None, str, str]],
) -> None:
    """Record attempts' outcomes: (attempt id, finished at, duration ms, status code, response
    body, error) each. On PostgreSQL one UPDATE from a VALUES list, where executemany made one
    round trip an attempt."""
    finished_at = DeliveryAttempt._meta.get_field("finished_at")
    rows = [
        (attempt_id, finished_at.get_db_prep_value(at, connection), duration_ms, status_code, body, error)
        for attempt_id, at, duration_ms, status_code, body, error in outcomes
    ]
    table = DeliveryAttempt._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql" and rows:
            values = ", ".join(["(%s, %s::timestamptz, %s::integer, %s::integer, %s, %s)"] * len(rows))
            cursor.execute(
                f"UPDATE {table} a SET finished_at = v.finished_at, duration_ms = v.duration_ms, "
                "status_code = v.status_code, response_body = v.response_body, error = v.error "
                f"FROM (VALUES {values}) AS v (id, finished_at, duration_ms, status_code, response_body, error) "
                "WHERE a.id = v.id",
                [value for row in rows for value in row],
            )
            return
        cursor.executemany(
            f"UPDATE {table} SET finished_at = %s, duration_ms = %s, status_code = %s, response_body = %s, "
            "error = %s WHERE id = %s",
            [(*row[1:], row[0]) for row in rows],
        )


def deliveries_reschedule(rows: Sequence[tuple[int, datetime, datetime | None]]) -> None:
    """Make deliveries pending again, each due at its time: (delivery id, next attempt at,
    dispatched at) each. On PostgreSQL one UPDATE from a VALUES list; elsewhere executemany."""
    field = Delivery._meta.get_field("next_attempt_at")
    values = [
        (delivery_id, field.get_db_prep_value(due, connection), field.get_db_prep_value(dispatched_at, connection))
        for delivery_id, due, dispatched_at in rows
    ]
    table, pending = Delivery._meta.db_table, Delivery.State.PENDING
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql" and values:
            placeholders = ", ".join(["(%s, %s::timestamptz, %s::timestamptz)"] * len(values))
            cursor.execute(
                f"UPDATE {table} d SET state = %s, next_attempt_at = v.due, dispatched_at = v.dispatched_at "
                f"FROM (VALUES {placeholders}) AS v (id, due, dispatched_at) WHERE d.id = v.id",
                [pending, *(value for row in values for value in row)],
            )
            return
        cursor.executemany(
            f"UPDATE {table} SET state = %s, next_attempt_at = %s, dispatched_at = %s WHERE id = %s",
            [(pending, due, dispatched_at, delivery_id) for delivery_id, due, dispatched_at in values],
        )
