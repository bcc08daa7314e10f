"""An owner's deliveries by state (`GET /api/deliveries/?state=`) have an index of their own,
owner first, and the owner's index alone goes: delivery_owner_created (owner first) serves what
it served, the log and a client's deletion.

Before, a state filter read other clients' deliveries: the failed and the held ones from the
partial indexes `delivery_failed` and `delivery_held`, which hold every client's (a small
client's page of failures read all 30,468 failed deliveries of 1.4 million; the biggest
client's failures of one event type read them all and kept none, 75-110 ms), and a state no
partial index holds from the whole table (`canceled`: a sequential scan of 1.4 million rows,
180-200 ms, for a page of nothing); the biggest client, asking for a state it had none of,
walked its own 1.1 million deliveries, 300-900 ms (docs/reliability.md, "One client's data,
another's cost").

Partial: only the deliveries not succeeded (a few in a hundred) are in it, 1.8 MB at 1.4
million deliveries where the owner's index took 10 MB; a delivery enters it when it is made
(pending) and leaves it when it succeeds, where the owner's index took an entry at both.

Built CONCURRENTLY, and the owner's index dropped CONCURRENTLY after it, on PostgreSQL; SQLite
(`make run`'s database) has neither keyword, nor anyone else writing."""
from django.db import migrations, models

from core.migration_operations import (
    AddIndexConcurrentlyOnPostgreSQL,
    column_index_dropped_concurrently,
)


class Migration(migrations.Migration):

    atomic = False

    dependencies = [
        ('core', '0001_initial'),
        ('webhooks', '0007_disabled_indexes'),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgreSQL(
            model_name='delivery',
            index=models.Index(condition=models.Q(('state', 'succeeded'), _negated=True),
                               fields=['owner', 'state', '-created_at'], name='delivery_owner_state_created'),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='delivery',
                    name='owner',
                    field=models.ForeignKey(db_index=False, on_delete=models.deletion.CASCADE, related_name='+',
                                            to='core.client'),
                ),
            ],
            database_operations=[column_index_dropped_concurrently(
                table="webhooks_delivery", column="owner_id", name="webhooks_delivery_owner_id_8d078035")],
        ),
    ]
