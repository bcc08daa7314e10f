"""The console's disabled endpoints and the deliveries held behind them (partial indexes: the
enabled endpoints and the deliveries not held, nearly all of them, are not in them).

Built CONCURRENTLY on PostgreSQL: a plain CREATE INDEX would block every write to the delivery
table, the service's busiest, while it reads the whole table. CONCURRENTLY cannot run in a
transaction, hence `atomic = False`; an interrupted build leaves an INVALID index, which
`DROP INDEX CONCURRENTLY <name>` removes before migrating again. SQLite (`make run`'s
database) has no CONCURRENTLY, nor anyone else writing: a plain CREATE INDEX there."""
from django.db import migrations, models

from core.migration_operations import AddIndexConcurrentlyOnPostgreSQL


class Migration(migrations.Migration):

    atomic = False

    dependencies = [
        ('webhooks', '0006_endpoint_disabled_at'),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgreSQL(
            model_name='endpoint',
            index=models.Index(condition=models.Q(('enabled', False)), fields=['disabled_reason'], name='endpoint_disabled'),
        ),
        AddIndexConcurrentlyOnPostgreSQL(
            model_name='delivery',
            index=models.Index(condition=models.Q(('state', 'endpoint_disabled')), fields=['endpoint'], name='delivery_held'),
        ),
    ]
