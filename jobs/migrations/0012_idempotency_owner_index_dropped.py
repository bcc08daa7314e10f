"""The idempotency keys' index on owner_id goes: the unique (owner, key) index, owner first,
serves every query by owner (and a client's deletion), and every submission that sends a key
wrote both. Dropping an index takes the table's lock for a moment only (no scan)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('core', '0001_initial'),
        ('jobs', '0011_prune_indexes'),
    ]

    operations = [
        migrations.AlterField(
            model_name='idempotencykey',
            name='owner',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='core.client'),
        ),
    ]
