"""The endpoint an idempotency key was first sent to (jobs/idempotency.py): a key answers on that
endpoint only, so a body that two endpoints read differently (one ignoring the other's fields)
is not answered with a job it did not ask for.

Nullable without a default: adding it rewrites no row and takes the table's lock for a moment
only. The rows already there keep NULL and answer as before on any endpoint, so a retry of a
request sent before the upgrade still replays within the key's TTL."""
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('jobs', '0015_job_next_step'),
    ]

    operations = [
        migrations.AddField(
            model_name='idempotencykey',
            name='endpoint',
            field=models.CharField(
                blank=True, max_length=8, null=True,
                choices=[('job', 'POST /api/jobs/'), ('batch', 'POST /api/jobs/batch/'), ('legacy', 'POST /api/job/')],
            ),
        ),
    ]
