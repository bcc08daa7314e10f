"""A client's count row exists from the client's creation (a trigger on the clients table), and
every client without one gets it here. Before, the row was made by the client's first unfinished
job: until then the submit's capped INSERT read no row to lock, so a new client's first
submissions, arriving together, all passed the cap.

SQLite drops a table's triggers when a migration rebuilds it: a later migration that rebuilds
core_client (most changes of its columns do, on SQLite) must make this trigger again.
"""
import importlib

from django.db import migrations

# Runs the statements of the connection's vendor.
_run = importlib.import_module("jobs.migrations.0004_jobcounts")._run

POSTGRESQL = [
    """
CREATE FUNCTION jobs_counts_of_clients() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO jobs_jobcounts (owner_id, unfinished, running, result_bytes)
    VALUES (NEW.id, 0, 0, 0) ON CONFLICT (owner_id) DO NOTHING;
    RETURN NULL;
END
$$""",
    """CREATE TRIGGER jobs_counts_client_insert AFTER INSERT ON core_client FOR EACH ROW
    EXECUTE FUNCTION jobs_counts_of_clients()""",
]
POSTGRESQL_REVERSE = [
    "DROP TRIGGER jobs_counts_client_insert ON core_client",
    "DROP FUNCTION jobs_counts_of_clients()",
]
SQLITE = [
    """CREATE TRIGGER jobs_counts_client_insert AFTER INSERT ON core_client BEGIN
    INSERT OR IGNORE INTO jobs_jobcounts (owner_id, unfinished, running, result_bytes) VALUES (NEW.id, 0, 0, 0);
END""",
]
SQLITE_REVERSE = ["DROP TRIGGER jobs_counts_client_insert"]
# The clients there already with no row (none of their jobs was ever unfinished): a row of zeros.
BACKFILL = {
    "postgresql": """INSERT INTO jobs_jobcounts (owner_id, unfinished, running, result_bytes)
    SELECT id, 0, 0, 0 FROM core_client ON CONFLICT (owner_id) DO NOTHING""",
    "sqlite": """INSERT OR IGNORE INTO jobs_jobcounts (owner_id, unfinished, running, result_bytes)
    SELECT id, 0, 0, 0 FROM core_client""",
}


class Migration(migrations.Migration):

    dependencies = [
        ('core', '0001_initial'),
        ('jobs', '0009_job_retry_at'),
    ]

    operations = [
        migrations.RunPython(
            _run({"postgresql": [*POSTGRESQL, BACKFILL["postgresql"]], "sqlite": [*SQLITE, BACKFILL["sqlite"]]}),
            _run({"postgresql": POSTGRESQL_REVERSE, "sqlite": SQLITE_REVERSE}),
        ),
    ]
