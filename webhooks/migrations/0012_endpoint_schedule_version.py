"""An endpoint counts changes of its pace and of enabled, so that a rescheduling of its waiting
deliveries started by an earlier change stops (webhooks/reschedule.py). A column with a constant
default: no rewrite of the table."""
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("webhooks", "0011_delivery_authority")]

    operations = [
        migrations.AddField(
            model_name="endpoint", name="schedule_version", field=models.PositiveIntegerField(default=0),
        ),
    ]
