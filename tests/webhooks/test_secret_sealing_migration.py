"""Migration webhooks 0015 on a database with signing secrets stored as is: each is sealed
(webhooks/sealing.py), reads back the same through the service, and the migration runs
backwards (the secrets as is again) and forwards again (PostgreSQL, and SQLite for `make run`)."""
from __future__ import annotations

from pathlib import Path

from tests.conftest import script_output

SCRIPT = """
import json

import django
django.setup()
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

call_command("migrate", "webhooks", "0013", verbosity=0)
before = MigrationExecutor(connection).loader.project_state(("webhooks", "0013_attempt_url")).apps
Client, Endpoint = before.get_model("core", "Client"), before.get_model("webhooks", "Endpoint")
SigningSecret = before.get_model("webhooks", "SigningSecret")
owner = Client.objects.create(name="migrated", created_at=timezone.now())
endpoint = Endpoint.objects.create(owner=owner, url="https://hooks.example.com/", event_types=["job.succeeded"])
plain = ["whsec_" + "A" * 43 + "=", "whsec_" + "B" * 43 + "="]
SigningSecret.objects.create(owner=owner, secret=plain[0])
SigningSecret.objects.create(owner=owner, endpoint=endpoint, secret=plain[1])

from webhooks import secrets

def column():
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM webhooks_signingsecret ORDER BY id")
        return [row[0] for row in cursor.fetchall()]

call_command("migrate", verbosity=0)
sealed = column()
read = [secrets.signing_secret_get_or_create(owner_id=owner.pk),
        secrets.signing_secret_get_or_create(owner_id=owner.pk, endpoint_id=endpoint.pk)]
call_command("migrate", "webhooks", "0013", verbosity=0)
unsealed = column()
call_command("migrate", verbosity=0)
print(json.dumps({
    "sealed": [value not in sealed and not token.startswith("whsec_") for value, token in zip(plain, sealed)],
    "read": read == plain, "unsealed": unsealed == plain,
    "again": [not token.startswith("whsec_") for token in column()],
}))
"""


def test_the_secrets_stored_as_is_are_sealed_and_read_the_same(database_url: str, tmp_path: Path) -> None:
    # Given a client's secret and an endpoint's stored as is (before 0015), when it migrates,
    # then back, then forwards again
    result = script_output(SCRIPT, database_url=database_url, data_dir=tmp_path)

    # Then the column holds neither once migrated, the service reads each the same, and going
    # back leaves them as they were
    assert result == '{"sealed": [true, true], "read": true, "unsealed": true, "again": [true, true]}'
