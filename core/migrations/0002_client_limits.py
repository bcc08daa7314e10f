"""Per-client overrides of the limits every client shares (core/limits.py): four nullable
columns, NULL (every existing client) keeping the setting's value. Nullable columns without a
default are added in place: a catalog change on PostgreSQL (no table rewrite), and on SQLite no
rebuild of core_client, which would drop its trigger (jobs 0010).
"""
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('core', '0001_initial'),
    ]

    operations = [
        migrations.AddField(
            model_name='client',
            name='submit_rate_per_minute',
            field=models.PositiveIntegerField(blank=True, help_text='Jobs submitted per minute (a batch counts each of its jobs) before 429; 0: no limit. Empty: API_SUBMIT_RATE_PER_MINUTE.', null=True),
        ),
        migrations.AddField(
            model_name='client',
            name='read_rate_per_minute',
            field=models.PositiveIntegerField(blank=True, help_text='Reads (GET requests) per minute before 429; 0: no limit. Empty: API_READ_RATE_PER_MINUTE.', null=True),
        ),
        migrations.AddField(
            model_name='client',
            name='max_unfinished_jobs',
            field=models.PositiveIntegerField(blank=True, help_text='Jobs not final yet (pending, running) at once before submissions get 429; 0: no cap. Empty: JOB_MAX_UNFINISHED_PER_CLIENT.', null=True),
        ),
        migrations.AddField(
            model_name='client',
            name='model_tokens_per_day',
            field=models.PositiveBigIntegerField(blank=True, help_text="Model tokens (the provider's usage.total_tokens) its jobs may spend per UTC day; 0: no budget. Empty: MODEL_TOKENS_PER_CLIENT_PER_DAY.", null=True),
        ),
    ]
