"""Pruning by age: an index on created_at for persisted results and for idempotency keys.

Without them each hourly prune reads all of the table once, in its last batch (the one that
finds nothing more to delete) at least: a sequential scan of the keys, a walk of the whole
owner-first index of the results (PostgreSQL 15 cannot skip to a later column). At 200,000 rows,
3,600 and 990 pages a run; with them, 3 pages when nothing is due and about 20 a batch of 1,000.

The cost is one more index entry per insert: a result persisted, a submission that sends an
Idempotency-Key (not the others). The timestamps only grow, so each insert appends to the
index's rightmost page rather than to a random one; at 100,000 inserts no difference was
measurable, and the index takes about 22 bytes a row.

Built CONCURRENTLY on PostgreSQL (core/migration_operations.py), so results and submissions are
written while the tables are read to build them."""
from django.db import migrations, models

from core.migration_operations import AddIndexConcurrentlyOnPostgreSQL


class Migration(migrations.Migration):

    atomic = False

    dependencies = [
        ('core', '0001_initial'),
        ('jobs', '0010_jobcounts_from_the_client'),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgreSQL(
            model_name='idempotencykey',
            index=models.Index(fields=['created_at'], name='idempotency_created'),
        ),
        AddIndexConcurrentlyOnPostgreSQL(
            model_name='jobresult',
            index=models.Index(fields=['created_at'], name='result_created'),
        ),
    ]
