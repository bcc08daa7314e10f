"""The X-Request-ID of the request that submitted a job, so that its messages carry it whoever
publishes them (jobs/dispatch.py job_publish): published by another job's end (the running cap)
or another request's batch dispatch, they carried that one's, and the job's log lines named a
request that never asked for it.

A constant default: on PostgreSQL 11 and later adding it rewrites no row and takes the table's
lock for a moment only. The rows already there have "" (no request): their lines name none.
SQLite rebuilds jobs_job to add it, so its triggers are dropped first and made again after, there
only (as in 0005)."""
import importlib

from django.db import migrations, models

_0005 = importlib.import_module("jobs.migrations.0005_job_control")


class Migration(migrations.Migration):

    dependencies = [
        ('jobs', '0019_job_active_since'),
    ]

    operations = [
        _0005._on("sqlite", _0005.SQLITE_DROP, _0005.SQLITE_CREATE),
        migrations.AddField(
            model_name='job',
            name='request_id',
            field=models.CharField(blank=True, default='', max_length=200),
        ),
        _0005._on("sqlite", _0005.SQLITE_CREATE, _0005.SQLITE_DROP),
    ]
