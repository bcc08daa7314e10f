"""When the database recorded a worker run's first beat (console/services.py worker_seen), the
console's "up for", by the database's clock rather than the worker host's.

Nullable without a default: adding it rewrites no row. A row of a run that started before keeps
NULL, and the console counts that run's time up from its own start, as it did."""
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('console', '0001_initial'),
    ]

    operations = [
        migrations.AddField(
            model_name='workerheartbeat',
            name='up_since',
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
