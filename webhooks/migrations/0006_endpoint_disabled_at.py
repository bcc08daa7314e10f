"""When an endpoint was disabled, for the console's disabled endpoints. An endpoint disabled for
failing before this migration was disabled by its last failure; one its client disabled has no
known time (NULL)."""
from typing import Any

from django.db import migrations, models
from django.db.models import F


def backfill(apps: Any, schema_editor: Any) -> None:
    Endpoint = apps.get_model("webhooks", "Endpoint")
    Endpoint.objects.filter(enabled=False, disabled_reason="failing").update(disabled_at=F("last_failure_at"))


class Migration(migrations.Migration):

    dependencies = [
        ('webhooks', '0005_operator_indexes'),
    ]

    operations = [
        migrations.AddField(
            model_name='endpoint',
            name='disabled_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
