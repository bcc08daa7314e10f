"""The per-owner count of unfinished jobs, kept by triggers on jobs_job (see UnfinishedJobCount).

The statuses are written out, as a migration's are frozen: PENDING, STARTED and RETRY are the
unfinished ones (Job.ACTIVE_STATUSES).
"""
import django.db.models.deletion
from django.db import migrations, models

UNFINISHED = "('PENDING', 'RETRY', 'STARTED')"

POSTGRESQL = f"""
CREATE FUNCTION jobs_unfinished_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        IF OLD.status IN {UNFINISHED} THEN
            UPDATE jobs_unfinishedjobcount SET unfinished = unfinished - 1 WHERE owner_id = OLD.owner_id;
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        IF NEW.status IN {UNFINISHED} THEN
            INSERT INTO jobs_unfinishedjobcount AS existing (owner_id, unfinished) VALUES (NEW.owner_id, 1)
            ON CONFLICT (owner_id) DO UPDATE SET unfinished = existing.unfinished + 1;
        END IF;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER jobs_unfinished_insert AFTER INSERT ON jobs_job FOR EACH ROW
    WHEN (NEW.status IN {UNFINISHED}) EXECUTE FUNCTION jobs_unfinished_count();
CREATE TRIGGER jobs_unfinished_update AFTER UPDATE OF status, owner_id ON jobs_job FOR EACH ROW
    WHEN ((OLD.status IN {UNFINISHED}) <> (NEW.status IN {UNFINISHED}) OR OLD.owner_id <> NEW.owner_id)
    EXECUTE FUNCTION jobs_unfinished_count();
CREATE TRIGGER jobs_unfinished_delete AFTER DELETE ON jobs_job FOR EACH ROW
    WHEN (OLD.status IN {UNFINISHED}) EXECUTE FUNCTION jobs_unfinished_count();
"""
POSTGRESQL_REVERSE = """
DROP TRIGGER jobs_unfinished_insert ON jobs_job;
DROP TRIGGER jobs_unfinished_update ON jobs_job;
DROP TRIGGER jobs_unfinished_delete ON jobs_job;
DROP FUNCTION jobs_unfinished_count();
"""

# SQLite's triggers have no IF: each statement carries its condition in a WHERE.
_SQLITE_ADD = f"""
    INSERT INTO jobs_unfinishedjobcount (owner_id, unfinished) SELECT NEW.owner_id, 1
    WHERE NEW.status IN {UNFINISHED}
    ON CONFLICT (owner_id) DO UPDATE SET unfinished = unfinished + 1;"""
_SQLITE_TAKE = f"""
    UPDATE jobs_unfinishedjobcount SET unfinished = unfinished - 1
    WHERE owner_id = OLD.owner_id AND OLD.status IN {UNFINISHED};"""
SQLITE = [
    f"CREATE TRIGGER jobs_unfinished_insert AFTER INSERT ON jobs_job BEGIN{_SQLITE_ADD}\nEND",
    f"""CREATE TRIGGER jobs_unfinished_update AFTER UPDATE OF status, owner_id ON jobs_job
    WHEN (OLD.status IN {UNFINISHED}) <> (NEW.status IN {UNFINISHED}) OR OLD.owner_id <> NEW.owner_id
    BEGIN{_SQLITE_TAKE}{_SQLITE_ADD}\nEND""",
    f"CREATE TRIGGER jobs_unfinished_delete AFTER DELETE ON jobs_job BEGIN{_SQLITE_TAKE}\nEND",
]
SQLITE_REVERSE = [
    "DROP TRIGGER jobs_unfinished_insert",
    "DROP TRIGGER jobs_unfinished_update",
    "DROP TRIGGER jobs_unfinished_delete",
]
# The jobs already there, counted once; the triggers keep the count from then on.
BACKFILL = f"""
INSERT INTO jobs_unfinishedjobcount (owner_id, unfinished)
SELECT owner_id, COUNT(*) FROM jobs_job WHERE status IN {UNFINISHED} GROUP BY owner_id
"""


def _run(statements: dict[str, list[str]]):
    def run(apps, schema_editor):
        for statement in statements[schema_editor.connection.vendor]:
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):

    dependencies = [
        ('core', '0001_initial'),
        ('jobs', '0001_initial'),
    ]

    operations = [
        migrations.CreateModel(
            name='UnfinishedJobCount',
            fields=[
                ('owner', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='+', serialize=False, to='core.client')),
                ('unfinished', models.IntegerField(default=0)),
            ],
        ),
        migrations.RunPython(
            _run({"postgresql": [POSTGRESQL, BACKFILL], "sqlite": [*SQLITE, BACKFILL]}),
            _run({"postgresql": [POSTGRESQL_REVERSE], "sqlite": SQLITE_REVERSE}),
        ),
    ]
