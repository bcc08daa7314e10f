"""An attempt carries its delivery's endpoint, and an endpoint's attempts have an index by start
(attempt_endpoint_started), so that the endpoint list's health counts (attempts of the last 24
hours, `webhooks/selectors.py` `endpoint_attempt_counts`) read the endpoint's own recent
attempts and nothing else.

Before, the counts went through the deliveries: for the biggest client's endpoint a sequential
scan of every client's attempts (1.5 million, 135-220 ms), and a small client's read every
delivery its endpoint ever had (docs/reliability.md, "One client's data, another's cost").

The column is added without a default (no rewrite of the table), the index built CONCURRENTLY
on PostgreSQL (SQLite, `make run`'s database, has no such keyword, nor anyone else writing),
and then the attempts of the last 24 hours, the counts' window, are given their endpoint: one
UPDATE of those rows (a pass over the table to find them, a primary-key probe of the deliveries
each; about 11,000 rows at 1.5 million attempts). Older attempts keep NULL: no count reads them.
Attempts the previous release's workers open after this migration, until they are restarted,
carry no endpoint and are left out of the counts for the 24 hours they are in its window."""
from datetime import timedelta
from typing import Any

from django.db import migrations, models
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from core.migration_operations import AddIndexConcurrentlyOnPostgreSQL

# The window of the health counts (webhooks/endpoint_api.py), as of this migration.
WINDOW = timedelta(hours=24)


def endpoints_of_recent_attempts(apps: Any, schema_editor: Any) -> None:
    attempt = apps.get_model("webhooks", "DeliveryAttempt")
    delivery = apps.get_model("webhooks", "Delivery")
    attempt.objects.filter(started_at__gte=timezone.now() - WINDOW, endpoint_id__isnull=True).update(
        endpoint_id=Subquery(delivery.objects.filter(pk=OuterRef("delivery_id")).values("endpoint_id")[:1])
    )


class Migration(migrations.Migration):

    atomic = False

    dependencies = [
        ('webhooks', '0009_event_owner_type'),
    ]

    operations = [
        migrations.AddField(
            model_name='deliveryattempt',
            name='endpoint_id',
            field=models.UUIDField(blank=True, null=True),
        ),
        AddIndexConcurrentlyOnPostgreSQL(
            model_name='deliveryattempt',
            index=models.Index(condition=models.Q(('endpoint_id__isnull', False)), fields=['endpoint_id', 'started_at'],
                               name='attempt_endpoint_started'),
        ),
        migrations.RunPython(endpoints_of_recent_attempts, migrations.RunPython.noop),
    ]
