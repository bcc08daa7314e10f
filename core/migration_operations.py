"""Migration operations the apps' migrations share: an index built or dropped, or a column's own
index dropped, without blocking writes."""
from __future__ import annotations

from typing import Any

from django.contrib.postgres.operations import (
    AddIndexConcurrently,
    RemoveIndexConcurrently,
)
from django.db import migrations


class AddIndexConcurrentlyOnPostgreSQL(AddIndexConcurrently):
    """AddIndexConcurrently on PostgreSQL, AddIndex elsewhere (SQLite, `make run`'s database,
    has no CONCURRENTLY, nor anyone else writing). Its migration must be `atomic = False`:
    CONCURRENTLY cannot run in a transaction. An interrupted build leaves an INVALID index,
    which `DROP INDEX CONCURRENTLY <name>` removes before migrating again."""

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)
        else:
            migrations.AddIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)
        else:
            migrations.AddIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)


class RemoveIndexConcurrentlyOnPostgreSQL(RemoveIndexConcurrently):
    """RemoveIndexConcurrently on PostgreSQL, RemoveIndex elsewhere; as the one above, its
    migration must be `atomic = False`."""

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)
        else:
            migrations.RemoveIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)
        else:
            migrations.RemoveIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)


def column_index_dropped_concurrently(*, table: str, column: str, name: str) -> migrations.RunPython:
    """Drop a column's own index (`name`: Django's for a foreign key, the same on every backend)
    CONCURRENTLY on PostgreSQL, plainly elsewhere; backwards, make it again. Its migration must
    be `atomic = False`, and its state says the field has `db_index=False`."""

    def concurrently(schema_editor: Any) -> str:
        return " CONCURRENTLY" if schema_editor.connection.vendor == "postgresql" else ""

    def drop(apps: Any, schema_editor: Any) -> None:
        schema_editor.execute(f"DROP INDEX{concurrently(schema_editor)} IF EXISTS {name}")

    def create(apps: Any, schema_editor: Any) -> None:
        schema_editor.execute(f"CREATE INDEX{concurrently(schema_editor)} IF NOT EXISTS {name} ON {table} ({column})")

    return migrations.RunPython(drop, create)
