"""A statement deleting jobs or results of several owners locks their count rows in owner order,
as the inserts' trigger does (0024): the deletes' triggers updated them in no set order (the
jobs' unfinished and running counts once per row, in the order the statement deleted the rows,
then their bytes in a hash join's order), so two statements deleting jobs of the same owners (an
operator's bulk deletion in the admin, a batch of the prune) could each hold a count row the
other waited for: a deadlock, PostgreSQL aborting one (the operator's 500, the prune's batch
undone). The jobs' unfinished and running counts are now taken once per statement too, with
their bytes, from its transition table (a deletion of many unfinished jobs of one owner, a
client's, updated its count row once per job, as 0023 says of the results).

SQLite (`make run`) is left as it is: it writes one transaction at a time, locking no rows.
"""
import importlib

from django.db import migrations

_0004 = importlib.import_module("jobs.migrations.0004_jobcounts")
_0023 = importlib.import_module("jobs.migrations.0023_results_count_per_statement")
_0024 = importlib.import_module("jobs.migrations.0024_jobcounts_job_bytes")
_run = _0004._run

UNFINISHED = "('PENDING', 'RETRY', 'STARTED')"
RUNNING = "('RETRY', 'STARTED')"

# The owners' count rows locked in owner order before the update, whose join takes them in any.
_LOCK_OWNERS = """PERFORM FROM jobs_jobcounts WHERE owner_id IN (SELECT owner_id FROM {table})
    ORDER BY owner_id FOR UPDATE;"""

POSTGRESQL = [
    "DROP TRIGGER jobs_counts_delete ON jobs_job",
    f"""
CREATE OR REPLACE FUNCTION jobs_counts_of_jobs_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    {_LOCK_OWNERS.format(table="deleted_jobs")}
    UPDATE jobs_jobcounts c
    SET job_bytes = c.job_bytes - gone.bytes, unfinished = c.unfinished - gone.unfinished,
        running = c.running - gone.running
    FROM (SELECT owner_id, SUM({_0024._PG_BYTES.format(row="deleted_jobs")}) AS bytes,
                 COUNT(*) FILTER (WHERE status IN {UNFINISHED}) AS unfinished,
                 COUNT(*) FILTER (WHERE status IN {RUNNING}) AS running
          FROM deleted_jobs GROUP BY owner_id) gone
    WHERE c.owner_id = gone.owner_id;
    RETURN NULL;
END
$$""",
    f"""
CREATE OR REPLACE FUNCTION jobs_counts_of_results_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    {_LOCK_OWNERS.format(table="deleted_results")}
    UPDATE jobs_jobcounts c SET result_bytes = c.result_bytes - gone.bytes
    FROM (SELECT owner_id, SUM(COALESCE(octet_length(result::text), 0)) AS bytes
          FROM deleted_results GROUP BY owner_id) gone
    WHERE c.owner_id = gone.owner_id;
    RETURN NULL;
END
$$""",
]


def _replacing(function: str) -> str:
    return function.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


# 0024's and 0023's functions back, and 0004's trigger counting a deleted unfinished job per row.
POSTGRESQL_REVERSE = [
    _replacing(_0024.POSTGRESQL[2]),
    _replacing(_0023.POSTGRESQL[1]),
    _0004.POSTGRESQL[3],
]


class Migration(migrations.Migration):

    # Tuples, not lists (a class attribute that is not mutable): Migration copies both into lists.
    dependencies = (
        ('jobs', '0024_jobcounts_job_bytes'),
    )

    operations = (
        migrations.RunPython(
            _run({"postgresql": POSTGRESQL, "sqlite": []}),
            _run({"postgresql": POSTGRESQL_REVERSE, "sqlite": []}),
        ),
    )
