"""Per owner, besides its unfinished jobs: its running jobs (the fair-share cap) and the bytes of
its persisted results (the results quota), kept by triggers like the unfinished count of 0002,
whose table becomes jobs_jobcounts. The sweeper's index gets the owner first: it now takes each
owner's waiting jobs in turn.

The statuses are written out, as a migration's are frozen: PENDING, STARTED and RETRY are the
unfinished ones, STARTED and RETRY the running ones. The old triggers are dropped before the
rename and the new ones made after it, on both databases (a renamed table inside a trigger's body
is not renamed with it in PostgreSQL's functions).
"""
import importlib

from django.db import migrations, models

_0002 = importlib.import_module("jobs.migrations.0002_unfinishedjobcount")

UNFINISHED = "('PENDING', 'RETRY', 'STARTED')"
RUNNING = "('RETRY', 'STARTED')"

DROP_0002 = {
    "postgresql": [
        "DROP TRIGGER jobs_unfinished_insert ON jobs_job",
        "DROP TRIGGER jobs_unfinished_update ON jobs_job",
        "DROP TRIGGER jobs_unfinished_delete ON jobs_job",
        "DROP FUNCTION jobs_unfinished_count()",
    ],
    "sqlite": [
        "DROP TRIGGER jobs_unfinished_insert",
        "DROP TRIGGER jobs_unfinished_update",
        "DROP TRIGGER jobs_unfinished_delete",
    ],
}

RECREATE_0002 = {"postgresql": [_0002.POSTGRESQL], "sqlite": _0002.SQLITE}

POSTGRESQL = [
    f"""
CREATE FUNCTION jobs_counts_of_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        UPDATE jobs_jobcounts
        SET unfinished = unfinished - (OLD.status IN {UNFINISHED})::int,
            running = running - (OLD.status IN {RUNNING})::int
        WHERE owner_id = OLD.owner_id;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO jobs_jobcounts AS existing (owner_id, unfinished, running, result_bytes)
        VALUES (NEW.owner_id, (NEW.status IN {UNFINISHED})::int, (NEW.status IN {RUNNING})::int, 0)
        ON CONFLICT (owner_id) DO UPDATE
        SET unfinished = existing.unfinished + EXCLUDED.unfinished,
            running = existing.running + EXCLUDED.running;
    END IF;
    RETURN NULL;
END
$$""",
    f"""CREATE TRIGGER jobs_counts_insert AFTER INSERT ON jobs_job FOR EACH ROW
    WHEN (NEW.status IN {UNFINISHED}) EXECUTE FUNCTION jobs_counts_of_jobs()""",
    f"""CREATE TRIGGER jobs_counts_update AFTER UPDATE OF status, owner_id ON jobs_job FOR EACH ROW
    WHEN ((OLD.status IN {UNFINISHED}) <> (NEW.status IN {UNFINISHED})
          OR (OLD.status IN {RUNNING}) <> (NEW.status IN {RUNNING}) OR OLD.owner_id <> NEW.owner_id)
    EXECUTE FUNCTION jobs_counts_of_jobs()""",
    f"""CREATE TRIGGER jobs_counts_delete AFTER DELETE ON jobs_job FOR EACH ROW
    WHEN (OLD.status IN {UNFINISHED}) EXECUTE FUNCTION jobs_counts_of_jobs()""",
    """
CREATE FUNCTION jobs_counts_of_results() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        UPDATE jobs_jobcounts SET result_bytes = result_bytes - COALESCE(octet_length(OLD.result::text), 0)
        WHERE owner_id = OLD.owner_id;
    ELSE
        INSERT INTO jobs_jobcounts AS existing (owner_id, unfinished, running, result_bytes)
        VALUES (NEW.owner_id, 0, 0, COALESCE(octet_length(NEW.result::text), 0))
        ON CONFLICT (owner_id) DO UPDATE SET result_bytes = existing.result_bytes + EXCLUDED.result_bytes;
    END IF;
    RETURN NULL;
END
$$""",
    """CREATE TRIGGER jobs_counts_result_insert AFTER INSERT ON jobs_jobresult FOR EACH ROW
    EXECUTE FUNCTION jobs_counts_of_results()""",
    """CREATE TRIGGER jobs_counts_result_delete AFTER DELETE ON jobs_jobresult FOR EACH ROW
    EXECUTE FUNCTION jobs_counts_of_results()""",
]
POSTGRESQL_REVERSE = [
    "DROP TRIGGER jobs_counts_insert ON jobs_job",
    "DROP TRIGGER jobs_counts_update ON jobs_job",
    "DROP TRIGGER jobs_counts_delete ON jobs_job",
    "DROP TRIGGER jobs_counts_result_insert ON jobs_jobresult",
    "DROP TRIGGER jobs_counts_result_delete ON jobs_jobresult",
    "DROP FUNCTION jobs_counts_of_jobs()",
    "DROP FUNCTION jobs_counts_of_results()",
]

# SQLite's triggers have no IF: each statement carries its condition in a WHERE.
_SQLITE_ADD = f"""
    INSERT INTO jobs_jobcounts (owner_id, unfinished, running, result_bytes)
    SELECT NEW.owner_id, NEW.status IN {UNFINISHED}, NEW.status IN {RUNNING}, 0
    WHERE NEW.status IN {UNFINISHED}
    ON CONFLICT (owner_id) DO UPDATE
    SET unfinished = unfinished + excluded.unfinished, running = running + excluded.running;"""
_SQLITE_TAKE = f"""
    UPDATE jobs_jobcounts
    SET unfinished = unfinished - (OLD.status IN {UNFINISHED}), running = running - (OLD.status IN {RUNNING})
    WHERE owner_id = OLD.owner_id;"""
_SQLITE_RESULT_BYTES = "COALESCE(length(CAST({row}.result AS BLOB)), 0)"
SQLITE = [
    f"CREATE TRIGGER jobs_counts_insert AFTER INSERT ON jobs_job BEGIN{_SQLITE_ADD}\nEND",
    f"""CREATE TRIGGER jobs_counts_update AFTER UPDATE OF status, owner_id ON jobs_job
    WHEN (OLD.status IN {UNFINISHED}) <> (NEW.status IN {UNFINISHED})
      OR (OLD.status IN {RUNNING}) <> (NEW.status IN {RUNNING}) OR OLD.owner_id <> NEW.owner_id
    BEGIN{_SQLITE_TAKE}{_SQLITE_ADD}\nEND""",
    f"CREATE TRIGGER jobs_counts_delete AFTER DELETE ON jobs_job BEGIN{_SQLITE_TAKE}\nEND",
    f"""CREATE TRIGGER jobs_counts_result_insert AFTER INSERT ON jobs_jobresult BEGIN
    INSERT INTO jobs_jobcounts (owner_id, unfinished, running, result_bytes)
    SELECT NEW.owner_id, 0, 0, {_SQLITE_RESULT_BYTES.format(row="NEW")}
    ON CONFLICT (owner_id) DO UPDATE SET result_bytes = result_bytes + excluded.result_bytes;
END""",
    f"""CREATE TRIGGER jobs_counts_result_delete AFTER DELETE ON jobs_jobresult BEGIN
    UPDATE jobs_jobcounts SET result_bytes = result_bytes - {_SQLITE_RESULT_BYTES.format(row="OLD")}
    WHERE owner_id = OLD.owner_id;
END""",
]
SQLITE_REVERSE = [
    "DROP TRIGGER jobs_counts_insert",
    "DROP TRIGGER jobs_counts_update",
    "DROP TRIGGER jobs_counts_delete",
    "DROP TRIGGER jobs_counts_result_insert",
    "DROP TRIGGER jobs_counts_result_delete",
]
# What is there already, counted once; the triggers keep the counts from then on.
BACKFILL = {
    "postgresql": [
        f"""UPDATE jobs_jobcounts c SET running = (
            SELECT COUNT(*) FROM jobs_job j WHERE j.owner_id = c.owner_id AND j.status IN {RUNNING})""",
        """INSERT INTO jobs_jobcounts AS existing (owner_id, unfinished, running, result_bytes)
        SELECT owner_id, 0, 0, SUM(COALESCE(octet_length(result::text), 0)) FROM jobs_jobresult GROUP BY owner_id
        ON CONFLICT (owner_id) DO UPDATE SET result_bytes = EXCLUDED.result_bytes""",
    ],
    "sqlite": [
        f"""UPDATE jobs_jobcounts SET running = (
            SELECT COUNT(*) FROM jobs_job j WHERE j.owner_id = jobs_jobcounts.owner_id AND j.status IN {RUNNING})""",
        f"""INSERT INTO jobs_jobcounts (owner_id, unfinished, running, result_bytes)
        SELECT owner_id, 0, 0, SUM({_SQLITE_RESULT_BYTES.format(row="jobs_jobresult")}) FROM jobs_jobresult
        WHERE true GROUP BY owner_id
        ON CONFLICT (owner_id) DO UPDATE SET result_bytes = excluded.result_bytes""",
    ],
}


def _run(statements: dict[str, list[str]]):
    def run(apps, schema_editor):
        for statement in statements[schema_editor.connection.vendor]:
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):

    dependencies = [
        ('core', '0001_initial'),
        ('jobs', '0003_owner_indexes_covered'),
    ]

    operations = [
        migrations.RunPython(_run(DROP_0002), _run(RECREATE_0002)),
        migrations.RenameModel(old_name='UnfinishedJobCount', new_name='JobCounts'),
        migrations.AlterModelOptions(name='jobcounts', options={'verbose_name_plural': 'job counts'}),
        migrations.AddField(model_name='jobcounts', name='running', field=models.IntegerField(default=0, db_default=0)),
        migrations.AddField(model_name='jobcounts', name='result_bytes', field=models.BigIntegerField(default=0, db_default=0)),
        migrations.RemoveIndex(model_name='job', name='job_undispatched'),
        migrations.AddIndex(
            model_name='job',
            index=models.Index(condition=models.Q(('dispatched_at__isnull', True), ('status', 'PENDING')), fields=['owner', 'created_at'], name='job_undispatched'),
        ),
        migrations.RunPython(
            _run({"postgresql": [*BACKFILL["postgresql"], *POSTGRESQL], "sqlite": [*BACKFILL["sqlite"], *SQLITE]}),
            _run({"postgresql": POSTGRESQL_REVERSE, "sqlite": SQLITE_REVERSE}),
        ),
    ]
