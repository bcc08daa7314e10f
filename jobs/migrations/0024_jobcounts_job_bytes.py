"""Per owner, the bytes its jobs' payloads and metadata hold (the job storage quota), measured as
the results are (the text of the JSON, in bytes), kept by triggers of their own beside the
unfinished and running counts' (0004's, left as they are: they fire only for unfinished jobs).

On PostgreSQL the inserts and deletes are counted once per statement, from its transition table,
each owner's row updated once: a statement inserting a million finished jobs (a seeding, a
restore by INSERT ... SELECT) updated one owner's row a million times per row, in one
transaction, each update walking every version the earlier ones left (past 8 minutes where the
insert took one), and a prune deleting a thousand jobs of many owners once per job. A change of a
job's owner, payload or metadata is counted per row: a statement trigger with transition tables
cannot name its columns, so it would run (and keep every updated row) for each transition of every
job, while these changes are rare (an operator's, by hand or the admin) and one at a time.

The column is counted from the jobs there already (a scan of the jobs table) once the triggers
are made: the jobs table is locked against writes first, until the migration commits, so no job
is inserted or deleted between the count and the triggers (counted twice, or not at all). SQLite
(`make run`, small, with no statement triggers) counts per row.
"""
import importlib

from django.db import migrations, models

_0004 = importlib.import_module("jobs.migrations.0004_jobcounts")
_0010 = importlib.import_module("jobs.migrations.0010_jobcounts_from_the_client")
_run = _0004._run

_PG_BYTES = "(COALESCE(octet_length({row}.payload::text), 0) + COALESCE(octet_length({row}.metadata::text), 0))"

POSTGRESQL = [
    # Ordered by owner, so that two statements inserting jobs of the same owners lock their rows
    # in the same order (no deadlock between them).
    f"""
CREATE FUNCTION jobs_counts_of_jobs_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO jobs_jobcounts AS existing (owner_id, unfinished, running, result_bytes, job_bytes)
    SELECT owner_id, 0, 0, 0, SUM({_PG_BYTES.format(row="inserted_jobs")})
    FROM inserted_jobs GROUP BY owner_id ORDER BY owner_id
    ON CONFLICT (owner_id) DO UPDATE SET job_bytes = existing.job_bytes + EXCLUDED.job_bytes;
    RETURN NULL;
END
$$""",
    """CREATE TRIGGER jobs_counts_job_bytes_insert AFTER INSERT ON jobs_job
    REFERENCING NEW TABLE AS inserted_jobs FOR EACH STATEMENT EXECUTE FUNCTION jobs_counts_of_jobs_inserted()""",
    f"""
CREATE FUNCTION jobs_counts_of_jobs_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE jobs_jobcounts c SET job_bytes = c.job_bytes - gone.bytes
    FROM (SELECT owner_id, SUM({_PG_BYTES.format(row="deleted_jobs")}) AS bytes
          FROM deleted_jobs GROUP BY owner_id) gone
    WHERE c.owner_id = gone.owner_id;
    RETURN NULL;
END
$$""",
    """CREATE TRIGGER jobs_counts_job_bytes_delete AFTER DELETE ON jobs_job
    REFERENCING OLD TABLE AS deleted_jobs FOR EACH STATEMENT EXECUTE FUNCTION jobs_counts_of_jobs_deleted()""",
    f"""
CREATE FUNCTION jobs_counts_of_jobs_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE jobs_jobcounts SET job_bytes = job_bytes - {_PG_BYTES.format(row="OLD")} WHERE owner_id = OLD.owner_id;
    INSERT INTO jobs_jobcounts AS existing (owner_id, unfinished, running, result_bytes, job_bytes)
    VALUES (NEW.owner_id, 0, 0, 0, {_PG_BYTES.format(row="NEW")})
    ON CONFLICT (owner_id) DO UPDATE SET job_bytes = existing.job_bytes + EXCLUDED.job_bytes;
    RETURN NULL;
END
$$""",
    """CREATE TRIGGER jobs_counts_job_bytes_update AFTER UPDATE OF owner_id, payload, metadata ON jobs_job
    FOR EACH ROW WHEN (OLD.owner_id <> NEW.owner_id OR OLD.payload IS DISTINCT FROM NEW.payload
                       OR OLD.metadata IS DISTINCT FROM NEW.metadata)
    EXECUTE FUNCTION jobs_counts_of_jobs_changed()""",
]
POSTGRESQL_REVERSE = [
    "DROP TRIGGER jobs_counts_job_bytes_insert ON jobs_job",
    "DROP TRIGGER jobs_counts_job_bytes_delete ON jobs_job",
    "DROP TRIGGER jobs_counts_job_bytes_update ON jobs_job",
    "DROP FUNCTION jobs_counts_of_jobs_inserted()",
    "DROP FUNCTION jobs_counts_of_jobs_deleted()",
    "DROP FUNCTION jobs_counts_of_jobs_changed()",
]

_SQLITE_BYTES = (
    "(COALESCE(length(CAST({row}.payload AS BLOB)), 0) + COALESCE(length(CAST({row}.metadata AS BLOB)), 0))"
)
_SQLITE_ADD = f"""
    INSERT INTO jobs_jobcounts (owner_id, unfinished, running, result_bytes, job_bytes)
    SELECT NEW.owner_id, 0, 0, 0, {_SQLITE_BYTES.format(row="NEW")}
    ON CONFLICT (owner_id) DO UPDATE SET job_bytes = job_bytes + excluded.job_bytes;"""
_SQLITE_TAKE = f"""
    UPDATE jobs_jobcounts SET job_bytes = job_bytes - {_SQLITE_BYTES.format(row="OLD")} WHERE owner_id = OLD.owner_id;"""
SQLITE = [
    f"CREATE TRIGGER jobs_counts_job_bytes_insert AFTER INSERT ON jobs_job BEGIN{_SQLITE_ADD}\nEND",
    f"CREATE TRIGGER jobs_counts_job_bytes_delete AFTER DELETE ON jobs_job BEGIN{_SQLITE_TAKE}\nEND",
    f"""CREATE TRIGGER jobs_counts_job_bytes_update AFTER UPDATE OF owner_id, payload, metadata ON jobs_job
    WHEN OLD.owner_id <> NEW.owner_id OR OLD.payload IS NOT NEW.payload OR OLD.metadata IS NOT NEW.metadata
    BEGIN{_SQLITE_TAKE}{_SQLITE_ADD}\nEND""",
]
SQLITE_REVERSE = [
    "DROP TRIGGER jobs_counts_job_bytes_insert",
    "DROP TRIGGER jobs_counts_job_bytes_delete",
    "DROP TRIGGER jobs_counts_job_bytes_update",
]
# SQLite adds the column by making the counts table again, which fails while a trigger on another
# table names it: those of the jobs, the results and the clients are dropped first and made again
# after, as they were.
_0004_SQLITE_NAMES = ("jobs_counts_insert", "jobs_counts_update", "jobs_counts_delete",
                      "jobs_counts_result_insert", "jobs_counts_result_delete")
SQLITE_OTHERS_DROP = [*(f"DROP TRIGGER {name}" for name in _0004_SQLITE_NAMES), "DROP TRIGGER jobs_counts_client_insert"]
SQLITE_OTHERS_CREATE = [*_0004.SQLITE, *_0010.SQLITE]
# The jobs table locked against writes before the counts table is changed: a transition (a submit
# too) writes the job, then its trigger the count row. Changed first, the counts table was held
# while the triggers' making waited for the jobs table, where a transition that had come meanwhile
# held its job and waited for the counts: a deadlock, the transition refused (in a test, every one
# under way when the column was added). Now it waits, as it waits for the triggers.
POSTGRESQL_LOCK = "LOCK TABLE jobs_job IN SHARE ROW EXCLUSIVE MODE"
# What is there already, counted once (the jobs table locked by the triggers' making); the
# triggers keep the counts from then on.
BACKFILL = {
    "postgresql": f"""UPDATE jobs_jobcounts c SET job_bytes = counted.bytes
    FROM (SELECT owner_id, SUM({_PG_BYTES.format(row="jobs_job")}) AS bytes FROM jobs_job GROUP BY owner_id) counted
    WHERE c.owner_id = counted.owner_id""",
    "sqlite": f"""UPDATE jobs_jobcounts SET job_bytes = COALESCE((
    SELECT SUM({_SQLITE_BYTES.format(row="jobs_job")}) FROM jobs_job WHERE jobs_job.owner_id = jobs_jobcounts.owner_id
    ), 0)""",
}


class Migration(migrations.Migration):

    dependencies = [
        ('jobs', '0023_results_count_per_statement'),
    ]

    operations = [
        migrations.RunPython(
            _run({"postgresql": [POSTGRESQL_LOCK], "sqlite": SQLITE_OTHERS_DROP}),
            _run({"postgresql": [], "sqlite": SQLITE_OTHERS_CREATE}),
        ),
        migrations.AddField(
            model_name='jobcounts', name='job_bytes', field=models.BigIntegerField(default=0, db_default=0),
        ),
        migrations.RunPython(
            _run({"postgresql": [*POSTGRESQL, BACKFILL["postgresql"]],
                  "sqlite": [BACKFILL["sqlite"], *SQLITE, *SQLITE_OTHERS_CREATE]}),
            _run({"postgresql": POSTGRESQL_REVERSE, "sqlite": [*SQLITE_REVERSE, *SQLITE_OTHERS_DROP]}),
        ),
    ]
