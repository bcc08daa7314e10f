"""The running step's heartbeat (step_heartbeat_at), its lease (jobs/leases.py): a copy of the
step's message redelivered while its worker still runs it (the worker lost its broker connection)
runs nothing until the heartbeat goes stale.

The column is nullable without a default: adding it rewrites no row, and takes no index (it is
read by primary key only). A step running under the old code has none: a copy of its message
redelivered then runs it again, as before."""
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('jobs', '0025_jobcounts_locked_in_owner_order'),
    ]

    operations = [
        migrations.AddField(
            model_name='job',
            name='step_heartbeat_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
