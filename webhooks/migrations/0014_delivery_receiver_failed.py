"""Each delivery says whether its receiver failed an attempt of it, so that one failing only by
the service's own fault (internal errors) is not counted against its receiver among the
console's failing receivers and in jobapi_webhook_failing_receivers.

Nullable, without a default: on PostgreSQL a change of the catalog alone, no rewrite of the
table, and the previous release's processes insert and record deliveries without it. Nothing is
filled in: NULL counts as the receiver's, as every failing delivery did."""
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("webhooks", "0013_attempt_url"),
    ]

    operations = [
        migrations.AddField(
            model_name="delivery",
            name="receiver_failed",
            field=models.BooleanField(blank=True, null=True),
        ),
    ]
