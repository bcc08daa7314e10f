"""An endpoint counts changes of its pace and of enabled, so that a rescheduling of its waiting
deliveries started by an earlier change stops, and says since when one is under way, so that the
dispatcher starts again one whose message was lost (webhooks/reschedule.py). Columns with a
constant default or none: no rewrite of the table; the index (of the few under way) built
CONCURRENTLY on PostgreSQL."""
from django.db import migrations, models

from core.migration_operations import AddIndexConcurrentlyOnPostgreSQL


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("webhooks", "0011_delivery_authority")]

    operations = [
        migrations.AddField(
            model_name="endpoint", name="schedule_version", field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="endpoint", name="rescheduling_since", field=models.DateTimeField(blank=True, null=True),
        ),
        AddIndexConcurrentlyOnPostgreSQL(
            model_name="endpoint",
            index=models.Index(condition=models.Q(rescheduling_since__isnull=False), fields=["rescheduling_since"],
                               name="endpoint_rescheduling"),
        ),
    ]
