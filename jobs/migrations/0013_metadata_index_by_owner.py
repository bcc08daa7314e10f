"""The metadata filter's GIN index holds each job's metadata under its owner's id
(`{"<owner>": {"k": "v"}}`), so a client's filter reads only its own jobs' entries.

Before, the index held the metadata alone (`job_metadata`, 0005): a filter found every client's
jobs with that label and PostgreSQL then dropped the other clients' rows one by one. When the
planner expected few (a label too rare in its sample to estimate), a client's page read every
other client's matching row: at two million jobs, 20,000 rows and 90-140 ms for a label none of
the asking client's jobs had, growing with the other clients' volume. `jsonb_path_ops` hashes a
value with its whole path, so the owner's id becomes part of every key: the same filter now
reads no entry of anyone else's, 0.04 ms (docs/reliability.md, "Indexes at a million rows").

Built CONCURRENTLY on PostgreSQL, as 0011's, and the old index dropped CONCURRENTLY after it,
so submissions go on while the table is read. SQLite has neither index (embedded mode)."""
import importlib

from django.db import migrations

# Runs the statements of the connection's vendor.
_run = importlib.import_module("jobs.migrations.0004_jobcounts")._run

# The expression must stay the one `jobs.selectors.MetadataOfOwner` writes, or the filter
# cannot use the index.
CREATE = """CREATE INDEX CONCURRENTLY job_owner_metadata ON jobs_job
    USING gin ((jsonb_set('{}'::jsonb, ARRAY[owner_id::text], metadata)) jsonb_path_ops)"""
DROP = "DROP INDEX CONCURRENTLY job_owner_metadata"
OLD_CREATE = "CREATE INDEX CONCURRENTLY job_metadata ON jobs_job USING gin (metadata jsonb_path_ops)"
OLD_DROP = "DROP INDEX CONCURRENTLY job_metadata"


class Migration(migrations.Migration):

    atomic = False

    dependencies = [
        ('jobs', '0012_idempotency_owner_index_dropped'),
    ]

    operations = [
        migrations.RunPython(
            _run({"postgresql": [CREATE, OLD_DROP], "sqlite": []}),
            _run({"postgresql": [OLD_CREATE, DROP], "sqlite": []}),
        ),
    ]
