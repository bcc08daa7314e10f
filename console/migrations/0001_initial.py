"""The Celery workers' heartbeats."""
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
    ]

    operations = [
        migrations.CreateModel(
            name='WorkerHeartbeat',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('hostname', models.CharField(max_length=255, unique=True)),
                ('queues', models.JSONField(default=list)),
                ('concurrency', models.PositiveIntegerField(default=0)),
                ('pid', models.PositiveIntegerField(default=0)),
                ('started_at', models.DateTimeField()),
                ('seen_at', models.DateTimeField()),
                ('stopped_at', models.DateTimeField(blank=True, null=True)),
            ],
            options={
                'indexes': [models.Index(fields=['seen_at'], name='worker_seen')],
            },
        ),
    ]
