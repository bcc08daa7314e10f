"""Drop the owner foreign keys' own indexes: the (owner, -created_at) indexes serve the same
lookups and cascades, and every job write had to update both.

A plain DROP INDEX under the new field state: an AlterField would rebuild the table on SQLite
(`make run`), and the rebuild would drop the triggers of 0002 with the old table.
"""
import django.db.models.deletion
from django.db import migrations, models


def _drop_index(table: str, index: str, column: str) -> migrations.RunSQL:
    return migrations.RunSQL(
        f"DROP INDEX IF EXISTS {index}", reverse_sql=f"CREATE INDEX {index} ON {table} ({column})"
    )


class Migration(migrations.Migration):

    dependencies = [
        ('core', '0001_initial'),
        ('jobs', '0002_unfinishedjobcount'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='job',
                    name='owner',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='jobs', to='core.client'),
                ),
                migrations.AlterField(
                    model_name='jobresult',
                    name='owner',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='results', to='core.client'),
                ),
            ],
            database_operations=[
                _drop_index("jobs_job", "jobs_job_owner_id_4c884775", "owner_id"),
                _drop_index("jobs_jobresult", "jobs_jobresult_owner_id_5edff496", "owner_id"),
            ],
        ),
    ]
