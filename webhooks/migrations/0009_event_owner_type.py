"""An owner's deliveries by event type (`GET /api/deliveries/?event_type=`) find the type among
the owner's own events, by an index owner first, and the owner's index alone goes:
event_owner_type (owner first) serves what it served, a client's deletion.

Before, the filter read other clients' events: a type the asking client has none of and a few
others have was looked for in a sequential scan of every client's events (999,999 rows, 94-132
ms at two million jobs; docs/reliability.md, "One client's data, another's cost").

Built CONCURRENTLY, and the owner's index dropped CONCURRENTLY after it, on PostgreSQL; SQLite
(`make run`'s database) has neither keyword, nor anyone else writing."""
from django.db import migrations, models

from core.migration_operations import AddIndexConcurrentlyOnPostgreSQL

# Django's name for the foreign key's own index (the same on every backend).
OWNER_INDEX = "webhooks_event_owner_id_5d3fc278"


def _concurrently(schema_editor) -> str:
    return " CONCURRENTLY" if schema_editor.connection.vendor == "postgresql" else ""


def _drop_owner_index(apps, schema_editor) -> None:
    schema_editor.execute(f"DROP INDEX{_concurrently(schema_editor)} IF EXISTS {OWNER_INDEX}")


def _create_owner_index(apps, schema_editor) -> None:
    schema_editor.execute(
        f"CREATE INDEX{_concurrently(schema_editor)} IF NOT EXISTS {OWNER_INDEX} ON webhooks_event (owner_id)"
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
            database_operations=[migrations.RunPython(_drop_owner_index, _create_owner_index)],
        ),
    ]
