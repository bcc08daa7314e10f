"""Job control: metadata, scheduled jobs (run_at), deadlines, retry policies, batches' idempotency.

SQLite rebuilds jobs_job to add a NOT NULL column, and the rebuild drops the table's triggers
(0004): they are dropped first and made again after, there only. On PostgreSQL the metadata
filter gets a GIN index (`jsonb_path_ops`, what `metadata @> '{"k": "v"}'` uses); SQLite has
none (embedded mode, small tables).
"""
import importlib

import django.db.models.functions.comparison
from django.db import migrations, models

_0004 = importlib.import_module("jobs.migrations.0004_jobcounts")
_JOBS_TRIGGERS = ("jobs_counts_insert", "jobs_counts_update", "jobs_counts_delete")
SQLITE_DROP = [f"DROP TRIGGER {name}" for name in _JOBS_TRIGGERS]
SQLITE_CREATE = [statement for statement in _0004.SQLITE if any(f"TRIGGER {name} " in statement for name in _JOBS_TRIGGERS)]
METADATA_INDEX = "CREATE INDEX job_metadata ON jobs_job USING gin (metadata jsonb_path_ops)"


def _on(vendor: str, forwards: list[str], backwards: list[str]) -> migrations.RunPython:
    def run(statements: list[str]):
        def apply(apps, schema_editor):
            if schema_editor.connection.vendor == vendor:
                for statement in statements:
                    schema_editor.execute(statement)

        return apply

    return migrations.RunPython(run(forwards), run(backwards))


class Migration(migrations.Migration):

    dependencies = [
        ('core', '0001_initial'),
        ('jobs', '0004_jobcounts'),
    ]

    operations = [
        _on("sqlite", SQLITE_DROP, SQLITE_CREATE),
        migrations.RemoveIndex(
            model_name='job',
            name='job_undispatched',
        ),
        migrations.AddField(
            model_name='idempotencykey',
            name='batch',
            field=models.JSONField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='job',
            name='attempt',
            field=models.PositiveIntegerField(default=1),
        ),
        migrations.AddField(
            model_name='job',
            name='deadline',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='job',
            name='max_attempts',
            field=models.PositiveIntegerField(default=1),
        ),
        migrations.AddField(
            model_name='job',
            name='metadata',
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddField(
            model_name='job',
            name='retry_backoff_seconds',
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='job',
            name='run_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddIndex(
            model_name='job',
            index=models.Index(models.F('owner'), django.db.models.functions.comparison.Coalesce('run_at', 'created_at'), condition=models.Q(('dispatched_at__isnull', True), ('status', 'PENDING')), name='job_waiting'),
        ),
        migrations.AddIndex(
            model_name='job',
            index=models.Index(condition=models.Q(('deadline__isnull', False), ('status__in', ['PENDING', 'STARTED', 'RETRY'])), fields=['deadline'], name='job_deadline'),
        ),
        _on("sqlite", SQLITE_CREATE, SQLITE_DROP),
        _on("postgresql", [METADATA_INDEX], ["DROP INDEX job_metadata"]),
    ]
