"""Migration webhooks 0016 on a database with a delivery log: the deliveries made before it carry
their event's type after it (what `?event_type=` reads), filled in range by range; and the migration runs backwards and
forwards again (PostgreSQL, and SQLite for `make run`)."""
from __future__ import annotations

from pathlib import Path

from tests.conftest import script_output

SCRIPT = """
import importlib
import uuid

import django
django.setup()
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

call_command("migrate", "webhooks", "0015", verbosity=0)
before = MigrationExecutor(connection).loader.project_state(("webhooks", "0015_signing_secret_sealed")).apps
Client = before.get_model("core", "Client")
Event, Delivery = before.get_model("webhooks", "Event"), before.get_model("webhooks", "Delivery")
owner = Client.objects.create(name="migrated")

# Five deliveries of each of two types, interleaved; a fill of two deliveries at a time
for n in range(10):
    event = Event.objects.create(owner=owner, subject_id=uuid.uuid4(), event_type=["job.succeeded", "job.failed"][n % 2],
                                 body=b"{}", message_id=f"msg_{uuid.uuid4().hex}")
    Delivery.objects.create(event=event, owner=owner, subject_id=event.subject_id, url="https://hooks.example.com/",
                            state="succeeded", attempt_count=1)
importlib.import_module("webhooks.migrations.0016_delivery_event_type").BACKFILL_BATCH = 2

from webhooks.models import Delivery as Migrated

def listed():
    # Per type, the types of the events of the deliveries that say they are of it
    return [sorted(Migrated.objects.filter(owner_id=owner.pk, event_type=kind).values_list("event__event_type", flat=True))
            for kind in ("job.succeeded", "job.failed")]

call_command("migrate", verbosity=0)
seen = [listed()]
call_command("migrate", "webhooks", "0015", verbosity=0)
call_command("migrate", verbosity=0)
seen.append(listed())
print(seen)
"""


def test_the_deliveries_before_the_upgrade_are_listed_by_their_event_type(database_url: str, tmp_path: Path) -> None:
    # Given five deliveries of each of two event types written before the migration, when it
    # migrates (two deliveries a range), and again after going back
    listed = script_output(SCRIPT, database_url=database_url, data_dir=tmp_path)

    # Then each type has its own five, each time
    five = [["job.succeeded"] * 5, ["job.failed"] * 5]
    assert listed == str([five, five]), listed
