"""Per owner, the bytes its jobs' payloads and metadata hold (the job storage quota), kept by
the jobs' triggers like its other counts: added as a job is inserted (the insert's trigger now
fires for every job, not only an unfinished one: every job is inserted PENDING anyway), taken
once per DELETE statement (a prune deletes a thousand jobs of many owners at once; per row, each
owner's row was updated once per job, as 0023 found for the results), and moved with a job whose
owner changes. Measured as the results are (the text of the JSON, in bytes).

The column is counted from the jobs there already (a scan of the jobs table) before the triggers
keep it. SQLite (`make run`) keeps it by its per-row triggers, made again here.
"""
import importlib

from django.db import migrations, models

_0004 = importlib.import_module("jobs.migrations.0004_jobcounts")
_0010 = importlib.import_module("jobs.migrations.0010_jobcounts_from_the_client")
_run = _0004._run
UNFINISHED, RUNNING = _0004.UNFINISHED, _0004.RUNNING

_PG_BYTES = "(COALESCE(octet_length({row}.payload::text), 0) + COALESCE(octet_length({row}.metadata::text), 0))"

_PG_COUNTS_OF_JOBS = f"""
CREATE OR REPLACE FUNCTION jobs_counts_of_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        UPDATE jobs_jobcounts
        SET unfinished = unfinished - (OLD.status IN {UNFINISHED})::int,
            running = running - (OLD.status IN {RUNNING})::int,
            job_bytes = job_bytes - CASE WHEN OLD.owner_id <> NEW.owner_id THEN {_PG_BYTES.format(row="OLD")} ELSE 0 END
        WHERE owner_id = OLD.owner_id;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE jobs_jobcounts
        SET unfinished = unfinished - (OLD.status IN {UNFINISHED})::int,
            running = running - (OLD.status IN {RUNNING})::int
        WHERE owner_id = OLD.owner_id;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO jobs_jobcounts AS existing (owner_id, unfinished, running, result_bytes, job_bytes)
        VALUES (NEW.owner_id, (NEW.status IN {UNFINISHED})::int, (NEW.status IN {RUNNING})::int, 0,
                CASE WHEN TG_OP = 'INSERT' OR OLD.owner_id <> NEW.owner_id THEN {_PG_BYTES.format(row="NEW")} ELSE 0 END)
        ON CONFLICT (owner_id) DO UPDATE
        SET unfinished = existing.unfinished + EXCLUDED.unfinished,
            running = existing.running + EXCLUDED.running,
            job_bytes = existing.job_bytes + EXCLUDED.job_bytes;
    END IF;
    RETURN NULL;
END
$$"""
POSTGRESQL = [
    _PG_COUNTS_OF_JOBS,
    "DROP TRIGGER jobs_counts_insert ON jobs_job",
    "CREATE TRIGGER jobs_counts_insert AFTER INSERT ON jobs_job FOR EACH ROW EXECUTE FUNCTION jobs_counts_of_jobs()",
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
]
POSTGRESQL_REVERSE = [
    "DROP TRIGGER jobs_counts_job_bytes_delete ON jobs_job",
    "DROP FUNCTION jobs_counts_of_jobs_deleted()",
    "DROP TRIGGER jobs_counts_insert ON jobs_job",
    _0004.POSTGRESQL[0].replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"),
    _0004.POSTGRESQL[1],
]

_SQLITE_BYTES = (
    "(COALESCE(length(CAST({row}.payload AS BLOB)), 0) + COALESCE(length(CAST({row}.metadata AS BLOB)), 0))"
)
_SQLITE_ADD = f"""
    INSERT INTO jobs_jobcounts (owner_id, unfinished, running, result_bytes, job_bytes)
    SELECT NEW.owner_id, NEW.status IN {UNFINISHED}, NEW.status IN {RUNNING}, 0, {{bytes}}
    ON CONFLICT (owner_id) DO UPDATE SET unfinished = unfinished + excluded.unfinished,
        running = running + excluded.running, job_bytes = job_bytes + excluded.job_bytes;"""
_SQLITE_TAKE = f"""
    UPDATE jobs_jobcounts
    SET unfinished = unfinished - (OLD.status IN {UNFINISHED}), running = running - (OLD.status IN {RUNNING}),
        job_bytes = job_bytes - {{bytes}}
    WHERE owner_id = OLD.owner_id;"""
_SQLITE_MOVED = "CASE WHEN OLD.owner_id <> NEW.owner_id THEN {} ELSE 0 END"
SQLITE_JOBS_DROP = ["DROP TRIGGER jobs_counts_insert", "DROP TRIGGER jobs_counts_update", "DROP TRIGGER jobs_counts_delete"]
SQLITE = [
    f"CREATE TRIGGER jobs_counts_insert AFTER INSERT ON jobs_job BEGIN{_SQLITE_ADD.format(bytes=_SQLITE_BYTES.format(row='NEW'))}\nEND",
    (f"""CREATE TRIGGER jobs_counts_update AFTER UPDATE OF status, owner_id ON jobs_job
    WHEN (OLD.status IN {UNFINISHED}) <> (NEW.status IN {UNFINISHED})
      OR (OLD.status IN {RUNNING}) <> (NEW.status IN {RUNNING}) OR OLD.owner_id <> NEW.owner_id
    BEGIN{_SQLITE_TAKE.format(bytes=_SQLITE_MOVED.format(_SQLITE_BYTES.format(row='OLD')))}"""
    f"{_SQLITE_ADD.format(bytes=_SQLITE_MOVED.format(_SQLITE_BYTES.format(row='NEW')))}\nEND"),
    f"CREATE TRIGGER jobs_counts_delete AFTER DELETE ON jobs_job BEGIN{_SQLITE_TAKE.format(bytes=_SQLITE_BYTES.format(row='OLD'))}\nEND",
]
SQLITE_REVERSE = _0004.SQLITE[:3]
# SQLite adds the column by making the counts table again, which fails while a trigger on
# another table names it: those of the results and the clients are dropped first, made again after
# (the jobs' are too, made again counting the bytes, or, going back, as they were).
SQLITE_OTHERS_DROP = ["DROP TRIGGER jobs_counts_result_insert", "DROP TRIGGER jobs_counts_result_delete",
                      "DROP TRIGGER jobs_counts_client_insert"]
SQLITE_OTHERS_CREATE = [*_0004.SQLITE[3:5], *_0010.SQLITE]
# What is there already, counted once; the triggers keep the counts from then on.
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
            _run({"postgresql": [], "sqlite": [*SQLITE_OTHERS_DROP, *SQLITE_JOBS_DROP]}),
            _run({"postgresql": [], "sqlite": [*SQLITE_OTHERS_CREATE, *SQLITE_REVERSE]}),
        ),
        migrations.AddField(
            model_name='jobcounts', name='job_bytes', field=models.BigIntegerField(default=0, db_default=0),
        ),
        migrations.RunPython(
            _run({"postgresql": [BACKFILL["postgresql"], *POSTGRESQL],
                  "sqlite": [BACKFILL["sqlite"], *SQLITE, *SQLITE_OTHERS_CREATE]}),
            _run({"postgresql": POSTGRESQL_REVERSE, "sqlite": [*SQLITE_OTHERS_DROP, *SQLITE_JOBS_DROP]}),
        ),
    ]
