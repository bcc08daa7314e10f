"""When a handed-over step started (step_started_at), so that one message of a hand-over starts
its step, and the sweeper can tell a handed-over step whose message was lost (the worker killed
between the hand-over's commit and its publish) from one that runs (jobs/hand_overs.py); and an
index for the sweeper's look for those, holding only the steps handed to the broker and not
started (a job is in it from a hand-over until its step starts, a moment but for a long queue).

The column is nullable without a default: adding it rewrites no row. A step handed over before
the migration counts as not started: its message, still queued, starts it as any other's; one
that ran under the old code long ago handed its next step over, or finished its job. The index
is built CONCURRENTLY on PostgreSQL (core/migration_operations.py), so submissions go on."""
from django.db import migrations, models

from core.migration_operations import AddIndexConcurrentlyOnPostgreSQL


class Migration(migrations.Migration):

    atomic = False

    dependencies = [
        ('jobs', '0020_job_request_id'),
    ]

    operations = [
        migrations.AddField(
            model_name='job',
            name='step_started_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        AddIndexConcurrentlyOnPostgreSQL(
            model_name='job',
            index=models.Index(
                condition=models.Q(('dispatched_at__isnull', False), ('next_step__isnull', False),
                                   ('status__in', ['STARTED', 'RETRY']), ('step_started_at__isnull', True)),
                fields=['dispatched_at'], name='job_step_in_broker',
            ),
        ),
    ]
