"""A running job's next step on its row (next_step, step_input), handed over there before its
message is sent, so a broker that refuses the message leaves it to the sweeper rather than lost
(jobs/tasks.py); and an index for the sweeper's look for those, empty but during an outage.

Both columns are nullable without a default: adding them rewrites no row. The index is built
CONCURRENTLY on PostgreSQL (core/migration_operations.py), so submissions go on meanwhile."""
from django.db import migrations, models

from core.migration_operations import AddIndexConcurrentlyOnPostgreSQL


class Migration(migrations.Migration):

    atomic = False

    dependencies = [
        ('jobs', '0014_job_in_broker'),
    ]

    operations = [
        migrations.AddField(
            model_name='job',
            name='next_step',
            field=models.PositiveSmallIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='job',
            name='step_input',
            field=models.JSONField(blank=True, null=True),
        ),
        AddIndexConcurrentlyOnPostgreSQL(
            model_name='job',
            index=models.Index(
                condition=models.Q(('dispatched_at__isnull', True), ('next_step__isnull', False),
                                   ('status__in', ['STARTED', 'RETRY'])),
                fields=['next_step'], name='job_step_waiting',
            ),
        ),
    ]
