"""An owner's deliveries by event type (`GET /api/deliveries/?event_type=`) find the type among
the owner's own events, by an index owner first, and the owner's index alone goes:
event_owner_type (owner first) serves what it served, a client's deletion.

Before, the filter read other clients' events: a type the asking client has none of and a few
others have was looked for in a sequential scan of every client's events (999,999 rows, 94-132
ms at two million jobs; docs/reliability.md, "One client's data, another's cost").

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
        ('webhooks', '0008_delivery_owner_state'),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgreSQL(
            model_name='event',
            index=models.Index(fields=['owner', 'event_type'], name='event_owner_type'),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='event',
                    name='owner',
                    field=models.ForeignKey(db_index=False, on_delete=models.deletion.CASCADE, related_name='+',
                                            to='core.client'),
                ),
            ],
            database_operations=[column_index_dropped_concurrently(
                table="webhooks_event", column="owner_id", name="webhooks_event_owner_id_5d3fc278")],
        ),
    ]
