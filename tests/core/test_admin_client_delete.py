"""The admin's deletion of a client confirms with how many rows of each kind go with it, read as
counts: Django's own confirmation read and listed every one of them (each job, event, result,
delivery), and its confirming POST read them all again before deleting, so a client with a year
of jobs could not be deleted at all (a page of hundreds of megabytes, past any request timeout)."""
from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client as HttpClient
from django.test.utils import CaptureQueriesContext

from core.models import Client
from core.services import api_key_create, client_create
from jobs.models import Job, JobEvent, JobResult

pytestmark = pytest.mark.django_db

HELLO = "api.tasks.hello_world"


def _client_with_jobs(count: int) -> tuple[Client, list[Job]]:
    owner = client_create(name="leaving")
    api_key_create(client=owner)
    jobs = Job.objects.bulk_create([Job(owner=owner, job_name=HELLO, status=Job.Status.SUCCESS) for _ in range(count)])
    JobEvent.objects.bulk_create([JobEvent(job=job, owner=owner, job_name=HELLO, event_type="job.succeeded", body="{}")
                                  for job in jobs])
    JobResult.objects.bulk_create([JobResult(owner=owner, job=job, task_name=HELLO, result="hi") for job in jobs])
    return owner, jobs


def _operator() -> HttpClient:
    http = HttpClient()
    http.force_login(User.objects.create_superuser("admin", "admin@example.com", "pw"))
    return http


def test_the_confirmation_counts_what_goes_with_the_client_without_reading_it() -> None:
    # Given a client with jobs, each with its event and its persisted result
    owner, jobs = _client_with_jobs(30)
    http = _operator()

    # When an operator asks to delete it
    with CaptureQueriesContext(connection) as queries:
        page = http.get(f"/admin/core/client/{owner.pk}/delete/").content.decode()

    # Then the page says how many of each kind go, lists none of them, and read none of them
    assert "Jobs: 30" in page and "Job events: 30" in page and "Job results: 30" in page
    assert "API keys: 1" in page
    assert not any(str(job.pk) in page for job in jobs)
    rows_read = [q["sql"] for q in queries if 'FROM "jobs_job"' in q["sql"] and "COUNT(" not in q["sql"]]
    assert rows_read == []

    # And confirming deletes the client with all it owns
    response = http.post(f"/admin/core/client/{owner.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Client.objects.filter(pk=owner.pk).exists()
    assert not Job.objects.filter(owner_id=owner.pk).exists()


def test_a_staff_user_who_may_not_delete_jobs_may_not_delete_a_client_with_jobs() -> None:
    # Given a client with a job, and a staff user who may delete clients but not jobs
    owner, _ = _client_with_jobs(1)
    staff = User.objects.create_user("staff", "staff@example.com", "pw", is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(codename__in=["delete_client", "view_client"]))
    http = HttpClient()
    http.force_login(staff)

    # When they ask to delete it, then they are told what they lack, and confirming is refused
    page = http.get(f"/admin/core/client/{owner.pk}/delete/").content.decode()
    assert "Cannot delete" in page and "job" in page
    assert http.post(f"/admin/core/client/{owner.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Client.objects.filter(pk=owner.pk).exists()


# The deletion is one transaction over all the client owns, their keys read into the process
# (200,000 jobs with their events, results and deliveries: 26 to 38 s, 250 MB, on 2 cores): in the admin it
# held an API process's memory as long as it ran, past a proxy's read timeout however large.
def test_a_client_with_more_jobs_than_the_admin_deletes_is_refused_with_the_command_to_use(settings: Any) -> None:
    # Given a client with more jobs than the admin deletes
    settings.ADMIN_CLIENT_DELETE_MAX_JOBS = 3
    owner, _ = _client_with_jobs(4)
    http = _operator()

    # When an operator asks to delete it, then they are sent back to the client, told why and how
    response = http.get(f"/admin/core/client/{owner.pk}/delete/", follow=True)
    assert response.redirect_chain == [(f"/admin/core/client/{owner.pk}/change/", 302)]
    page = response.content.decode()
    assert "more than 3 jobs" in page and f"manage.py client_delete {owner.pk}" in page

    # And a confirmation posted anyway deletes nothing
    response = http.post(f"/admin/core/client/{owner.pk}/delete/", {"post": "yes"}, follow=True)
    assert f"manage.py client_delete {owner.pk}" in response.content.decode()
    assert Client.objects.filter(pk=owner.pk).exists()
    assert Job.objects.filter(owner_id=owner.pk).count() == 4


def test_delete_selected_refuses_a_selection_with_a_client_too_large_and_deletes_one_at_the_bound(settings: Any) -> None:
    # Given a client with more jobs than the admin deletes, and one with as many as it does
    settings.ADMIN_CLIENT_DELETE_MAX_JOBS = 3
    large, _ = _client_with_jobs(4)
    small = client_create(name="small")
    Job.objects.bulk_create([Job(owner=small, job_name=HELLO, status=Job.Status.SUCCESS) for _ in range(3)])
    http = _operator()

    # When an operator deletes both from the list (confirmed), then nothing is deleted, and they
    # are told which client is too large and the command that deletes it
    response = http.post("/admin/core/client/", {"action": "delete_selected", "post": "yes",
                                                  "_selected_action": [large.pk, small.pk]}, follow=True)
    page = response.content.decode()
    assert "“leaving” has more than 3 jobs" in page and f"manage.py client_delete {large.pk}" in page
    assert "“small” has more" not in page
    assert Client.objects.filter(pk__in=[large.pk, small.pk]).count() == 2

    # And the one at the bound alone is deleted there, with its jobs
    response = http.post("/admin/core/client/", {"action": "delete_selected", "post": "yes",
                                                  "_selected_action": [small.pk]})
    assert response.status_code == 302
    assert not Client.objects.filter(pk=small.pk).exists()
    assert not Job.objects.filter(owner_id=small.pk).exists()


def test_a_client_with_more_rows_than_a_statement_may_count_in_an_api_process_can_still_be_deleted() -> None:
    # Given a client whose delivery log holds 200,000 deliveries, and a connection bounded as an
    # API process's are (API_DB_STATEMENT_TIMEOUT_SECONDS), here to 5 ms: less than counting
    # them takes, as 25 s is for a client with years of them
    owner = client_create(name="many-deliveries")
    http = _operator()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO webhooks_event (message_id, owner_id, subject_id, event_type, body, created_at)
            VALUES ('msg_many', %(owner)s, gen_random_uuid(), 'job.succeeded', '\\x7b7d', now());
            INSERT INTO webhooks_delivery (event_id, owner_id, subject_id, url, state, redelivery, attempt_count,
                                           created_at, authority)
            SELECT currval(pg_get_serial_sequence('webhooks_event', 'id')), %(owner)s, gen_random_uuid(),
                   'https://example.com/hooks', 'succeeded', false, 1, now(), ''
            FROM generate_series(1, 200000);
            SET LOCAL statement_timeout = '5ms'
            """,
            {"owner": owner.pk},
        )

    # When an operator asks to delete it
    page = http.get(f"/admin/core/client/{owner.pk}/delete/")

    # Then the confirmation counted them: the deletion's counts, like the deletion itself
    # (core.services.client_delete), are not cut at the bound. Cut, the page and its confirming
    # POST (which counts again) answered 503 every time, and the client could never be deleted.
    assert page.status_code == 200, page.content[:300]
    assert "Deliveries: 200000" in page.content.decode()

    # And confirming deletes it
    assert http.post(f"/admin/core/client/{owner.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not Client.objects.filter(pk=owner.pk).exists()
