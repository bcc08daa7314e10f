"""The jobs not final yet, indexed by status and by when each fell due (its run_at, for a
scheduled job, else its creation), in place of by status and creation (job_active): the oldest
pending job (/metrics' jobapi_oldest_pending_job_age_seconds, the console's list) is the first
entries, where through job_active every pending job was read and sorted for it on each scrape
and refresh (100,000 waiting: 52-56 ms, 2,411 pages; a parallel Seq Scan of a million jobs,
168-210 ms, while PostgreSQL's statistics were those of a fresh load). Through this index:
8 pages, 0.04-0.08 ms. The other reads of job_active (by status: the counts by status, the
longest running, the abandoned-job sweep) read the same entries, its first column.

Built CONCURRENTLY, then job_active dropped CONCURRENTLY, on PostgreSQL
(core/migration_operations.py), so submissions go on meanwhile."""
from django.db import migrations, models
from django.db.models import F
from django.db.models.functions import Coalesce

from core.migration_operations import (
    AddIndexConcurrentlyOnPostgreSQL,
    RemoveIndexConcurrentlyOnPostgreSQL,
)


class Migration(migrations.Migration):

    atomic = False

    dependencies = [
        ('jobs', '0018_idempotency_headers'),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgreSQL(
            model_name='job',
            index=models.Index(
                F('status'), Coalesce('run_at', 'created_at'), name='job_active_since',
                condition=models.Q(('status__in', ['PENDING', 'STARTED', 'RETRY'])),
            ),
        ),
        RemoveIndexConcurrentlyOnPostgreSQL(model_name='job', name='job_active'),
    ]
