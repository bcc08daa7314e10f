"""The jobs in the broker (handed to it, not started): an index for the sweeper's look for those
whose message was lost (jobs.dispatch.jobs_release_stranded).

That look went through the unfinished jobs' index (job_active: status, created_at) and read
every job pending since before its bound (6 hours), waiting ones included: with one client's
100,000 jobs waiting at its running cap for hours, PostgreSQL took a Seq Scan of the 1,115,026
jobs every sweep (96 ms, 23,000 pages; 20 ms through job_active), to find nothing. Through this
index: 2 pages, 0.01 ms.

A job enters the index when it is accepted (a submission inserts it handed to the broker) and
leaves it when it starts; at 115,000 jobs pending of which 5,000 in the broker it takes 128 kB.
The entries are times that only grow, appended at the index's right edge: 100,000 inserts in
alternating blocks took 1,787, 1,497 and 1,458 ms without it, 1,394, 1,354 and 1,588 ms with it.

Built CONCURRENTLY on PostgreSQL (core/migration_operations.py), so submissions go on while it
is built."""
from django.db import migrations, models

from core.migration_operations import AddIndexConcurrentlyOnPostgreSQL


class Migration(migrations.Migration):

    atomic = False

    dependencies = [
        ('jobs', '0013_metadata_index_by_owner'),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgreSQL(
            model_name='job',
            index=models.Index(
                condition=models.Q(('dispatched_at__isnull', False), ('status', 'PENDING')),
                fields=['dispatched_at'], name='job_in_broker',
            ),
        ),
    ]
