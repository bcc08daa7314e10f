"""The console's failing receivers: deliveries given up on, by when (a partial index: the
delivered ones, nearly all of them, are not in it)."""
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('webhooks', '0004_endpoints'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='delivery',
            index=models.Index(condition=models.Q(('state', 'failed')), fields=['finished_at'], name='delivery_failed'),
        ),
    ]
