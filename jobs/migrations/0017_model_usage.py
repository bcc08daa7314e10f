"""The tokens each client's jobs spent on model calls per UTC day (jobs.models.ModelUsage), which
the daily model budget (MODEL_TOKENS_PER_CLIENT_PER_DAY) is checked against. A new, empty table."""
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('core', '0001_initial'),
        ('jobs', '0016_idempotency_endpoint'),
    ]

    operations = [
        migrations.CreateModel(
            name='ModelUsage',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('day', models.DateField()),
                ('tokens', models.BigIntegerField(default=0)),
                ('owner', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='core.client')),
            ],
            options={
                'verbose_name_plural': 'model usage',
                'constraints': [models.UniqueConstraint(fields=('owner', 'day'), name='modelusage_owner_day')],
            },
        ),
    ]
