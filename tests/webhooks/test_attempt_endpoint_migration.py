"""Migration webhooks 0010 on a database with a delivery log: the attempts of the last 24 hours are
given their endpoint, so the health counts right after an upgrade are those from before it; and
the migration runs backwards and forwards again (PostgreSQL, and SQLite for `make run`)."""
from __future__ import annotations

from pathlib import Path

from tests.conftest import script_output

SCRIPT = """
import uuid
from datetime import timedelta

import django
django.setup()
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

call_command("migrate", "webhooks", "0009", verbosity=0)
before = MigrationExecutor(connection).loader.project_state(("webhooks", "0009_event_owner_type")).apps
Client, Endpoint = before.get_model("core", "Client"), before.get_model("webhooks", "Endpoint")
Event, Delivery = before.get_model("webhooks", "Event"), before.get_model("webhooks", "Delivery")
Attempt = before.get_model("webhooks", "DeliveryAttempt")
now = timezone.now()
owner = Client.objects.create(name="migrated", created_at=now)
endpoint = Endpoint.objects.create(owner=owner, url="https://hooks.example.com/", event_types=["job.succeeded"])

def attempted(endpoint, hours_ago, status_code):
    event = Event.objects.create(owner=owner, subject_id=uuid.uuid4(), event_type="job.succeeded", body=b"{}",
                                 message_id=f"msg_{uuid.uuid4().hex}")
    at = now - timedelta(hours=hours_ago)
    delivery = Delivery.objects.create(event=event, owner=owner, subject_id=event.subject_id, endpoint=endpoint,
                                       url="https://hooks.example.com/", state="succeeded", attempt_count=1,
                                       created_at=at, finished_at=at)
    Attempt.objects.create(delivery=delivery, number=1, started_at=at, finished_at=at, status_code=status_code)

# The endpoint's attempts an hour ago (a 2xx, a 500) and two days ago; a callback_url's an hour ago
attempted(endpoint, 1, 200)
attempted(endpoint, 1, 500)
attempted(endpoint, 48, 200)
attempted(None, 1, 200)

from webhooks.selectors import endpoint_attempt_counts

def counts():
    found = endpoint_attempt_counts(endpoint_ids=[endpoint.id], since=now - timedelta(hours=24))
    return list(found.get(endpoint.id, (0, 0)))

call_command("migrate", verbosity=0)
seen = [counts()]
call_command("migrate", "webhooks", "0009", verbosity=0)
call_command("migrate", verbosity=0)
seen.append(counts())
print(seen)
"""


def test_the_counts_after_the_upgrade_include_the_attempts_before_it(database_url: str, tmp_path: Path) -> None:
    # Given a delivery log written before the migration (one 2xx and one failure of an endpoint
    # an hour ago, one two days ago, a callback's), when it migrates, and again after going back
    counts = script_output(SCRIPT, database_url=database_url, data_dir=tmp_path)

    # Then the endpoint's counts are its two attempts of the last 24 hours, each time
    assert counts == "[[1, 1], [1, 1]]"
