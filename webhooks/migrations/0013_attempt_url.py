"""Each attempt keeps the URL it was sent to: an endpoint's deliveries go to its URL of the
moment, read when each attempt is claimed, so that a change of the URL writes none of them (it
rewrote every waiting delivery in the request: 5.3 s at 200,000, docs/webhooks.md).

Added with a constant default, kept in the database (the previous release's processes open
attempts without it): on PostgreSQL a change of the catalog alone, no rewrite of the table.
Nothing is filled in: the log shows an older attempt's delivery URL, as it did."""
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("webhooks", "0012_endpoint_schedule_version"),
    ]

    operations = [
        migrations.AddField(
            model_name="deliveryattempt",
            name="url",
            field=models.CharField(blank=True, db_default="", default="", max_length=2000),
        ),
    ]
