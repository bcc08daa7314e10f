"""The admin's "Delete selected" on the tables that grow with traffic (results, events,
deliveries) confirms with the chosen rows' names and counts of what goes with them, reading no
body: Django's confirmation read each selected event's deliveries joined to their event (the
event's body, the job whole, again for each) and each delivery's attempts whole (their response
bodies), up to ADMIN_ACTION_MAX_ROWS (500) selected rows in an API process."""
from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client as HttpClient
from django.test.utils import CaptureQueriesContext

from core.services import client_create
from jobs.models import JobResult
from tests.core.test_admin import large_rows
from webhooks.models import Delivery, DeliveryAttempt, Event

pytestmark = pytest.mark.django_db

# What a client fills, up to API_MAX_BODY_BYTES each (an attempt's response, its first KiB).
_BODIES = ['"jobs_job"."payload"', '"jobs_job"."result"', '"jobs_job"."step_input"', '"jobs_jobresult"."result"',
           '"webhooks_event"."body"', '"webhooks_deliveryattempt"."response_body"']


@pytest.mark.parametrize(("path", "kind", "going"), [
    ("/admin/jobs/jobresult/", JobResult, ["Job results: 3"]),
    ("/admin/webhooks/event/", Event, ["Events: 3", "Deliveries: 3"]),
    ("/admin/webhooks/delivery/", Delivery, ["Deliveries: 3", "Delivery attempts: 6"]),
])
def test_delete_selected_confirms_and_deletes_reading_no_body(path: str, kind: type, going: list[str]) -> None:
    # Given a client's three jobs with large payloads and results, their results, events,
    # deliveries and the deliveries' attempts
    _, results, events, deliveries = large_rows()
    DeliveryAttempt.objects.bulk_create(DeliveryAttempt(delivery=delivery, number=number, status_code=500,
                                                        response_body="y" * 4096)
                                        for delivery in deliveries for number in (1, 2))
    rows = {JobResult: results, Event: events, Delivery: deliveries}[kind]
    chosen = [str(row.pk) for row in rows]
    http = HttpClient()
    http.force_login(User.objects.create_superuser("admin", "admin@example.com", "pw"))

    # When an operator selects them on the list and chooses "Delete selected"
    with CaptureQueriesContext(connection) as queries:
        page = http.post(path, {"action": "delete_selected", "index": 0, "_selected_action": chosen})

    # Then the confirmation names each of them and counts what goes with them, having read no body
    assert page.status_code == 200
    text = page.content.decode()
    assert "Are you sure you want to delete" in text
    assert all(str(row) in text for row in rows), text
    assert all(count in text for count in going), text
    assert [q["sql"][:200] for q in queries if any(column in q["sql"] for column in _BODIES)] == []
    # (nor each result's job and client, joined to name it: Django's page read them whole)
    assert [q["sql"][:200] for q in queries if 'JOIN "jobs_job"' in q["sql"] or 'JOIN "core_client"' in q["sql"]] == []

    # And confirming deletes them (with what goes with them), reading no body either
    with CaptureQueriesContext(connection) as queries:
        done = http.post(path, {"action": "delete_selected", "post": "yes", "_selected_action": chosen}, follow=True)
    assert f"Successfully deleted 3 {kind._meta.verbose_name_plural}." in done.content.decode()
    assert not kind.objects.filter(pk__in=chosen).exists()
    # (an event's deliveries and a delivery's attempts with them)
    assert DeliveryAttempt.objects.count() == {JobResult: 6, Event: 0, Delivery: 0}[kind]
    assert [q["sql"][:200] for q in queries if any(column in q["sql"] for column in _BODIES)] == []


def test_a_deliverys_page_delete_counts_its_attempts_reading_none() -> None:
    # Given a delivery with two attempts, each with the start of its receiver's answer
    owner = client_create(name="acme")
    event = Event.objects.create(owner=owner, subject_id=uuid.uuid4(), event_type="job.succeeded", body=b"{}")
    delivery = Delivery.objects.create(owner=owner, event=event, subject_id=event.subject_id,
                                       url="https://receiver.example.com/", state="failed")
    DeliveryAttempt.objects.bulk_create(DeliveryAttempt(delivery=delivery, number=number, status_code=500,
                                                        response_body="y" * 4096) for number in (1, 2))
    http = HttpClient()
    http.force_login(User.objects.create_superuser("admin", "admin@example.com", "pw"))

    # When an operator asks to delete it from its page
    with CaptureQueriesContext(connection) as queries:
        page = http.get(f"/admin/webhooks/delivery/{delivery.pk}/delete/").content.decode()

    # Then the confirmation names it and counts its attempts, having read none of them
    assert str(delivery) in page and "Delivery attempts: 2" in page
    assert [q["sql"][:200] for q in queries if '"webhooks_deliveryattempt"."response_body"' in q["sql"]] == []

    # And confirming deletes it with its attempts
    assert http.post(f"/admin/webhooks/delivery/{delivery.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not DeliveryAttempt.objects.filter(delivery_id=delivery.pk).exists()


@pytest.mark.parametrize("path", ["/admin/jobs/job/", "/admin/jobs/jobresult/", "/admin/webhooks/event/",
                                  "/admin/webhooks/delivery/"])
def test_a_rows_page_delete_confirms_and_deletes_it_reading_no_body(path: str) -> None:
    # Given a client's three jobs with large payloads and results, their results, events and deliveries
    jobs, results, events, deliveries = large_rows()
    row = {"/admin/jobs/job/": jobs, "/admin/jobs/jobresult/": results, "/admin/webhooks/event/": events,
           "/admin/webhooks/delivery/": deliveries}[path][0]
    http = HttpClient()
    http.force_login(User.objects.create_superuser("admin", "admin@example.com", "pw"))

    # When an operator asks to delete one from its page
    with CaptureQueriesContext(connection) as queries:
        page = http.get(f"{path}{row.pk}/delete/")

    # Then the confirmation names it, having read none of its client's columns (Django's page read
    # the row whole: a job's payload and result, up to a megabyte each, to show its name)
    assert page.status_code == 200
    assert str(row) in page.content.decode()
    assert [q["sql"][:200] for q in queries if any(column in q["sql"] for column in _BODIES)] == []

    # And confirming deletes it, reading none of them either
    with CaptureQueriesContext(connection) as queries:
        assert http.post(f"{path}{row.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not type(row).objects.filter(pk=row.pk).exists()
    assert [q["sql"][:200] for q in queries if any(column in q["sql"] for column in _BODIES)] == []
