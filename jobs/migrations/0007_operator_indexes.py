"""The operators' reads across clients (console/, /metrics): the jobs not final yet, and those
that finished lately; each a partial index, so the rows it leaves out cost it nothing."""
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('jobs', '0006_webhook_endpoints'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='job',
            index=models.Index(condition=models.Q(('status__in', ['PENDING', 'STARTED', 'RETRY'])), fields=['status', 'created_at'], name='job_active'),
        ),
        migrations.AddIndex(
            model_name='job',
            index=models.Index(condition=models.Q(('finished_at__isnull', False)), fields=['finished_at'], name='job_finished'),
        ),
    ]
