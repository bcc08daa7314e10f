"""The sweeper's index of the running jobs' steps waiting for it, by when each is due (retry_at),
in place of one by step (job_step_waiting): a retry whose backoff is longer than a sweep now waits
there on its row rather than as an ETA message in a worker (jobs.transitions.job_retry_later),
and the sweeper, which publishes only those due, read every one of them on each run (every 5 s)
through the old index, an hour's backoff of a whole provider outage among them.

Built CONCURRENTLY before the old one is dropped CONCURRENTLY (core/migration_operations.py),
so the sweeper always has one, and submissions go on meanwhile."""
from django.db import migrations, models

from core.migration_operations import (
    AddIndexConcurrentlyOnPostgreSQL,
    RemoveIndexConcurrentlyOnPostgreSQL,
)


class Migration(migrations.Migration):

    atomic = False

    dependencies = [
        ('jobs', '0021_job_step_started_at'),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgreSQL(
            model_name='job',
            index=models.Index(
                condition=models.Q(('dispatched_at__isnull', True), ('next_step__isnull', False),
                                   ('status__in', ['STARTED', 'RETRY'])),
                fields=['retry_at'], name='job_step_due',
            ),
        ),
        RemoveIndexConcurrentlyOnPostgreSQL(
            model_name='job',
            name='job_step_waiting',
        ),
    ]
