"""The list endpoints' filters are served by indexes at a million rows (EXPLAIN, not timing)."""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.faults.stack import Stack

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]

JOBS = 1_000_000
RESULTS = 300_000
EVENTS = 300_000
OWNERS = 100

# The SQL the list endpoints run (Django's, with the cursor paginator's ORDER BY and LIMIT),
# for the biggest owner; each with the index that must serve it.
QUERIES = {
    "jobs, no filter": (
        ("SELECT * FROM jobs_job WHERE owner_id = %(owner)s "
         "ORDER BY created_at DESC, id DESC LIMIT 51"),
        "job_owner_created",
    ),
    "jobs, status=FAILURE (1 %)": (
        ("SELECT * FROM jobs_job WHERE owner_id = %(owner)s AND status = 'FAILURE' "
         "ORDER BY created_at DESC, id DESC LIMIT 51"),
        "job_owner_status_created",
    ),
    "jobs, job_name (rare)": (
        ("SELECT * FROM jobs_job WHERE owner_id = %(owner)s AND job_name = 'api.tasks.checklist' "
         "ORDER BY created_at DESC, id DESC LIMIT 51"),
        "job_owner_name_created",
    ),
    "jobs, created_after/before (one day)": (
        ("SELECT * FROM jobs_job WHERE owner_id = %(owner)s AND created_at >= now() - interval '30 days' "
         "AND created_at < now() - interval '29 days' ORDER BY created_at DESC, id DESC LIMIT 51"),
        "job_owner_created",
    ),
    "jobs, a later page (cursor)": (
        ("SELECT * FROM jobs_job WHERE owner_id = %(owner)s AND status = 'SUCCESS' "
         "AND created_at < now() - interval '100 days' ORDER BY created_at DESC, id DESC LIMIT 51"),
        # 99 % of rows match: the planner rightly walks the owner's newest-first index instead.
        "job_owner_status_created|job_owner_created",
    ),
    "results, task_name": (
        ("SELECT * FROM jobs_jobresult WHERE owner_id = %(owner)s AND task_name = 'api.tasks.checklist' "
         "ORDER BY created_at DESC, id DESC LIMIT 51"),
        "result_owner_task_created",
    ),
    "deliveries of a job": (
        ("SELECT * FROM webhooks_delivery WHERE subject_id = %(subject)s ORDER BY created_at DESC"),
        "delivery_subject",
    ),
}

PRUNE_QUERIES = {
    "jobs finished > 30 days ago (a batch)": (
        "SELECT id FROM jobs_job WHERE status IN ('SUCCESS', 'FAILURE', 'REVOKED') "
        "AND finished_at < now() - interval '30 days' LIMIT 1000"
    ),
    "jobs finished > 300 days ago (nothing to prune)": (
        "SELECT id FROM jobs_job WHERE status IN ('SUCCESS', 'FAILURE', 'REVOKED') "
        "AND finished_at < now() - interval '300 days' LIMIT 1000"
    ),
}


def test_list_filters_use_indexes_at_a_million_rows(
    make_stack: Callable[..., Stack], figures: dict[str, Any]
) -> None:
    # Given a million jobs (60 % of them one owner's), results and webhook logs
    stack = make_stack()
    stack.sql(f"""
        INSERT INTO core_client (id, name, created_at)
        SELECT gen_random_uuid(), 'owner-' || g, now() FROM generate_series(1, {OWNERS}) g;
        CREATE TEMP TABLE o AS SELECT array_agg(id ORDER BY name) AS ids FROM core_client;
        INSERT INTO jobs_job (id, owner_id, job_name, payload, status, callback_url, webhook_events,
                              cancel_requested, dispatched_at, created_at, finished_at)
        SELECT gen_random_uuid(),
               o.ids[CASE WHEN g % 10 < 6 THEN 1 ELSE 2 + g % {OWNERS - 1} END],
               CASE WHEN g % 1000 = 0 THEN 'api.tasks.checklist' WHEN g % 2 = 0
                    THEN 'api.tasks.hello_world' ELSE 'api.tasks.long_running_task' END,
               '{{}}', CASE WHEN g % 100 = 0 THEN 'FAILURE' ELSE 'SUCCESS' END, '', '[]',
               false, ts, ts, ts + interval '1 second'
        FROM o, (SELECT g, now() - (g * interval '20 seconds') AS ts
                 FROM generate_series(1, {JOBS}) g) s;
        INSERT INTO jobs_jobresult (owner_id, job_id, task_name, result, created_at)
        SELECT o.ids[1 + g % 2], NULL,
               CASE WHEN g % 100 = 0 THEN 'api.tasks.checklist' ELSE 'api.tasks.save_task_result_test_task' END,
               '1', now() - g * interval '20 seconds'
        FROM o, generate_series(1, {RESULTS}) g;
        INSERT INTO webhooks_event (message_id, owner_id, subject_id, event_type, body, created_at)
        SELECT 'msg_' || md5(g::text), o.ids[1], gen_random_uuid(),
               'job.succeeded', '\\x7b7d', now() - g * interval '20 seconds'
        FROM o, generate_series(1, {EVENTS}) g;
        INSERT INTO webhooks_delivery (event_id, owner_id, subject_id, url, state, redelivery,
                                       attempt_count, created_at)
        SELECT id, owner_id, subject_id, 'https://hooks.example.com/', 'succeeded', false, 1, created_at
        FROM webhooks_event;
        ANALYZE;
    """)
    (owner,) = stack.sql(
        "SELECT owner_id FROM jobs_job GROUP BY owner_id ORDER BY count(*) DESC LIMIT 1")[0]
    (subject,) = stack.sql("SELECT subject_id FROM webhooks_delivery LIMIT 1")[0]

    # When the list endpoints' queries are explained (and run)
    measured: dict[str, Any] = {}
    for name, (sql, index) in QUERIES.items():
        statement = sql % {"owner": f"'{owner}'", "subject": f"'{subject}'"}
        plan = "\n".join(row[0] for row in stack.sql(f"EXPLAIN (ANALYZE, BUFFERS) {statement}"))

        # Then each is an index scan on the expected index, never a sequential scan
        assert "Seq Scan" not in plan, f"{name}:\n{plan}"
        used = re.search(rf"Index (?:Only )?Scan(?: Backward)? using ({index})\b", plan)
        assert used, f"{name}:\n{plan}"
        execution = re.search(r"Execution Time: ([\d.]+) ms", plan)
        measured[name] = {"index": used.group(1),
                          "execution_ms": float(execution.group(1)) if execution else None}

    # The pruner's batch query has no index of its own: recorded (not asserted) for the docs.
    prune: dict[str, Any] = {}
    for name, sql in PRUNE_QUERIES.items():
        plan = "\n".join(row[0] for row in stack.sql(f"EXPLAIN (ANALYZE) {sql}"))
        execution = re.search(r"Execution Time: ([\d.]+) ms", plan)
        prune[name] = {"plan": plan.splitlines()[1].strip() if len(plan.splitlines()) > 1 else plan,
                       "execution_ms": float(execution.group(1)) if execution else None}
    figures.update(jobs=JOBS, results=RESULTS, deliveries=EVENTS, owners=OWNERS, queries=measured,
                   prune_batch=prune)
