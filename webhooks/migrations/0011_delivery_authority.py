"""A delivery to a callback URL keeps the URL's host and port (`authority`), which the console
counts its failing receivers by: parsing each failing delivery's URL in the query took 210-225
ms at 160,000 failing deliveries to callbacks, the column 104 (docs/benchmarks.md).

Added with a constant default, kept in the database (the previous release's processes insert
deliveries without it): on PostgreSQL a change of the catalog alone, no rewrite of the table.
Nothing is filled in: the console parses the URL of a delivery whose authority is empty, and
those made before this migration are delivered or given up on within the retry schedule."""
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('webhooks', '0010_attempt_endpoint'),
    ]

    operations = [
        migrations.AddField(
            model_name='delivery',
            name='authority',
            field=models.CharField(blank=True, db_default='', default='', max_length=2000),
        ),
    ]
