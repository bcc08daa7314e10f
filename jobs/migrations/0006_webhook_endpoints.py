"""Whether a job's events go to its owner's registered webhook endpoints (default: they do).

As in 0005, SQLite rebuilds jobs_job to add the column, so its triggers are dropped first and
made again after, there only.
"""
import importlib

from django.db import migrations, models

_0005 = importlib.import_module("jobs.migrations.0005_job_control")


class Migration(migrations.Migration):

    dependencies = [
        ('jobs', '0005_job_control'),
    ]

    operations = [
        _0005._on("sqlite", _0005.SQLITE_DROP, _0005.SQLITE_CREATE),
        migrations.AddField(
            model_name='job',
            name='webhook_endpoints',
            field=models.BooleanField(default=True),
        ),
        _0005._on("sqlite", _0005.SQLITE_CREATE, _0005.SQLITE_DROP),
    ]
