"""The results' bytes taken from their owners' counts once per DELETE statement, not once per
result row: a statement deleting many of one owner's results (a client's deletion, all of its
results in one) updated that owner's count row once per row, in one transaction, each update
walking every version the earlier ones left: quadratic, 4.3 s for 20,000 results, hours for a
client with a year of them (past any request: the client could not be deleted). The insert's
trigger stays per row (a result is inserted one at a time, as its job finishes), and SQLite's
too (it has no statement triggers; `make run`'s database is small).
"""
import importlib

from django.db import migrations

# Runs the statements of the connection's vendor.
_run = importlib.import_module("jobs.migrations.0004_jobcounts")._run

POSTGRESQL = [
    "DROP TRIGGER jobs_counts_result_delete ON jobs_jobresult",
    """
CREATE FUNCTION jobs_counts_of_results_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE jobs_jobcounts c SET result_bytes = c.result_bytes - gone.bytes
    FROM (SELECT owner_id, SUM(COALESCE(octet_length(result::text), 0)) AS bytes
          FROM deleted_results GROUP BY owner_id) gone
    WHERE c.owner_id = gone.owner_id;
    RETURN NULL;
END
$$""",
    """CREATE TRIGGER jobs_counts_result_delete AFTER DELETE ON jobs_jobresult
    REFERENCING OLD TABLE AS deleted_results FOR EACH STATEMENT EXECUTE FUNCTION jobs_counts_of_results_deleted()""",
]
POSTGRESQL_REVERSE = [
    "DROP TRIGGER jobs_counts_result_delete ON jobs_jobresult",
    "DROP FUNCTION jobs_counts_of_results_deleted()",
    """CREATE TRIGGER jobs_counts_result_delete AFTER DELETE ON jobs_jobresult FOR EACH ROW
    EXECUTE FUNCTION jobs_counts_of_results()""",
]


class Migration(migrations.Migration):

    dependencies = [
        ('jobs', '0022_job_step_due'),
    ]

    operations = [
        migrations.RunPython(
            _run({"postgresql": POSTGRESQL, "sqlite": []}),
            _run({"postgresql": POSTGRESQL_REVERSE, "sqlite": []}),
        ),
    ]
