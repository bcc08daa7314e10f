"""The headers of the request an idempotency key came with that change what it makes
(`Cancel-After`, jobs/idempotency.py): a repeat with other headers is another request, 422,
where it answered the first request's job as if it had asked for it.

Nullable without a default: adding it rewrites no row and takes the table's lock for a moment
only. The rows already there keep NULL and are compared by their body alone, as they were, so an
honest retry of a request sent before the upgrade, with its headers, still replays within the
key's TTL."""
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('jobs', '0017_model_usage'),
    ]

    operations = [
        migrations.AddField(
            model_name='idempotencykey',
            name='headers',
            field=models.JSONField(blank=True, null=True),
        ),
    ]
