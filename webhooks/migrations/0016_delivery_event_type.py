"""Each delivery carries its event's type, with an index of an owner's deliveries by type, newest
first (delivery_owner_type_created), which `GET /api/deliveries/?event_type=` reads.

Before, the filter went through the events: PostgreSQL estimated a type by its share among every
client's events, so for a type rare in one client's log (10 job.failed among 300,000 events) it
walked all of that client's deliveries newest first and looked up each one's event: 446-640 ms
for a first page (docs/reliability.md, "Indexes at a million rows"). Extended statistics did not
help: the rare pair never makes ANALYZE's sample.

The column is added with a constant default kept in the database (no rewrite of the table; the
previous release's processes insert deliveries without it), filled in by ranges of
BACKFILL_BATCH ids, each range its own transaction, so no delivery stays locked long; then the
index is built CONCURRENTLY on PostgreSQL (SQLite, `make run`'s database, has no such keyword,
nor anyone else writing). Deliveries the previous release records after the fill, until its
processes are restarted, keep an empty type and are not found by the filter
(docs/deployment.md)."""
from typing import Any

from django.db import migrations, models
from django.db.models import Max, Min, OuterRef, Subquery

from core.migration_operations import AddIndexConcurrentlyOnPostgreSQL

# Deliveries whose type one UPDATE fills in.
BACKFILL_BATCH = 10_000


def event_types_copied(apps: Any, schema_editor: Any) -> None:
    delivery = apps.get_model("webhooks", "Delivery")
    event = apps.get_model("webhooks", "Event")
    bounds = delivery.objects.aggregate(first=Min("pk"), last=Max("pk"))
    if bounds["first"] is None:
        return
    its_type = Subquery(event.objects.filter(pk=OuterRef("event_id")).values("event_type")[:1])
    for start in range(bounds["first"], bounds["last"] + 1, BACKFILL_BATCH):
        delivery.objects.filter(pk__gte=start, pk__lt=start + BACKFILL_BATCH, event_type="").update(
            event_type=its_type)


class Migration(migrations.Migration):

    atomic = False

    dependencies = [
        ('webhooks', '0015_signing_secret_sealed'),
    ]

    operations = [
        migrations.AddField(
            model_name='delivery',
            name='event_type',
            field=models.CharField(blank=True, db_default='', default='', max_length=50),
        ),
        migrations.RunPython(event_types_copied, migrations.RunPython.noop),
        AddIndexConcurrentlyOnPostgreSQL(
            model_name='delivery',
            index=models.Index(fields=['owner', 'event_type', '-created_at'], name='delivery_owner_type_created'),
        ),
    ]
