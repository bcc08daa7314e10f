"""A job's retry due time (the abandoned-job rule measures a retried job from it). A nullable
column without a default is added in place, on PostgreSQL and SQLite alike (the jobs table is not
rebuilt, so its count triggers stay)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('core', '0001_initial'),
        ('jobs', '0008_job_events'),
    ]

    operations = [
        migrations.AddField(
            model_name='job',
            name='retry_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
