"""The admin lists jobs, results and API keys for an operator."""
from __future__ import annotations

import datetime
import json
import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client as HttpClient
from django.test.utils import CaptureQueriesContext

from core.admin_site import EstimatedCountPaginator
from core.services import api_key_create, client_create
from jobs.admin import JobAdmin
from jobs.models import Job, JobResult, ModelUsage
from tests.conftest import plan_of
from webhooks.models import Delivery, Event

pytestmark = pytest.mark.django_db


def test_admin_changelists_and_details_render() -> None:
    owner = client_create(name="acme")
    api_key_create(client=owner)
    job = Job.objects.create(owner=owner, job_name="api.tasks.hello_world", status="SUCCESS", result="hi")
    JobResult.objects.create(owner=owner, job=job, task_name=job.job_name, result="hi")
    http = HttpClient()
    http.force_login(User.objects.create_superuser("admin", "admin@example.com", "pw"))

    for url in (
        "/admin/jobs/job/", "/admin/jobs/job/?status__exact=SUCCESS", f"/admin/jobs/job/{job.pk}/change/",
        "/admin/jobs/jobresult/", "/admin/core/apikey/", "/admin/core/client/",
    ):
        response = http.get(url)
        assert response.status_code == 200, url
    assert b"acme" in http.get("/admin/core/apikey/").content


def test_the_model_usage_list_shows_the_biggest_spenders_of_the_latest_day_first() -> None:
    # Given three clients' model usage over two days
    today = datetime.date(2026, 12, 5)
    yesterday = today - datetime.timedelta(days=1)
    for name, day, tokens in (("acme", today, 1_200), ("globex", today, 98_000), ("initech", yesterday, 500_000)):
        ModelUsage.objects.create(owner=client_create(name=name), day=day, tokens=tokens)
    http = HttpClient()
    http.force_login(User.objects.create_superuser("admin", "admin@example.com", "pw"))

    # When an operator opens it
    page = http.get("/admin/jobs/modelusage/").content.decode()

    # Then today's rows come first, the largest first, then yesterday's
    assert page.index("globex") < page.index("acme") < page.index("initech")
    assert "98000" in page or "98,000" in page


def test_deleting_a_clients_model_usage_of_today_confirms_naming_it_and_deletes_it() -> None:
    # Given a client's model usage of today (deleting it gives it the day's budget afresh)
    usage = ModelUsage.objects.create(owner=client_create(name="acme"), day=datetime.date(2026, 12, 5), tokens=1_200)
    http = HttpClient()
    http.force_login(User.objects.create_superuser("admin", "admin@example.com", "pw"))
    chosen = {"action": "delete_selected", "_selected_action": [str(usage.pk)]}

    # When an operator chooses "Delete selected" for it, then confirms
    with CaptureQueriesContext(connection) as queries:
        page = http.post("/admin/jobs/modelusage/", {**chosen, "index": 0})
    done = http.post("/admin/jobs/modelusage/", {**chosen, "post": "yes"}, follow=True)

    # Then the confirmation names it in one read of the chosen rows, and it is gone
    assert str(usage) in page.content.decode()
    assert len([q for q in queries if 'FROM "jobs_modelusage"' in q["sql"]]) <= 2
    assert "Successfully deleted 1 model usage" in done.content.decode()
    assert not ModelUsage.objects.filter(pk=usage.pk).exists()


def test_with_debug_off_the_admin_cookies_are_secure_without_an_https_redirect(settings: Any) -> None:
    # The suite runs with DEBUG off and SECURE_SSL_REDIRECT off (it talks plain http).
    assert not settings.DEBUG and not settings.SECURE_SSL_REDIRECT
    User.objects.create_superuser("admin", "admin@example.com", "pw")
    http = HttpClient(enforce_csrf_checks=True)

    login_page = http.get("/admin/login/")
    signed_in = http.post(
        "/admin/login/?next=/admin/",
        {"username": "admin", "password": "pw", "csrfmiddlewaretoken": login_page.cookies["csrftoken"].value},
    )

    assert signed_in.status_code == 302, signed_in.content[:500]
    assert login_page.cookies["csrftoken"]["secure"] is True
    assert signed_in.cookies["sessionid"]["secure"] is True


def test_a_staff_password_must_be_long_and_uncommon() -> None:
    # The admin's own password form, as an operator changing theirs uses it
    http = HttpClient()
    http.force_login(User.objects.create_superuser("operator", "operator@example.com", "first-Long-passphrase-41"))

    def change_to(password: str) -> int:
        return http.post("/admin/password_change/", {
            "old_password": "first-Long-passphrase-41", "new_password1": password, "new_password2": password,
        }).status_code

    # A common password, a short one and an all-digit one are refused (the form again: 200)
    assert change_to("password1234") == 200
    assert change_to("xK9#qz") == 200
    assert change_to("894512763301") == 200
    # A long uncommon one is taken (redirect to "done")
    assert change_to("correct horse battery staple 7") == 302


def test_jobs_and_results_are_not_added_in_the_admin() -> None:
    # Every field of theirs is read-only (a job comes from its client's submission), so the add
    # form saved a job or result without an owner: a 500.
    http = HttpClient()
    http.force_login(User.objects.create_superuser("admin", "admin@example.com", "pw"))

    for model in ("job", "jobresult"):
        assert http.get(f"/admin/jobs/{model}/add/").status_code == 403
        assert http.post(f"/admin/jobs/{model}/add/", {}).status_code == 403
        assert f'href="/admin/jobs/{model}/add/"' not in http.get(f"/admin/jobs/{model}/").content.decode()
    assert not Job.objects.exists() and not JobResult.objects.exists()


def test_the_lists_filters_read_no_whole_table() -> None:
    # Django's filter on a field without choices lists the table's distinct values, and a date
    # hierarchy its first and last dates and each year: scans of a month of jobs and events, a
    # year of results, on every page of those lists (which the console links to).
    owner = client_create(name="acme")
    job = Job.objects.create(owner=owner, job_name="api.tasks.hello_world", status="SUCCESS", result="hi")
    Job.objects.create(owner=owner, job_name="api.tasks.long_running_task", status="SUCCESS")
    JobResult.objects.create(owner=owner, job=job, task_name=job.job_name, result="hi")
    Event.objects.create(owner=owner, subject_id=job.pk, event_type="job.succeeded", body=b"{}")
    http = HttpClient()
    http.force_login(User.objects.create_superuser("admin", "admin@example.com", "pw"))

    for url in ("/admin/jobs/job/", "/admin/jobs/jobresult/", "/admin/webhooks/event/"):
        with CaptureQueriesContext(connection) as queries:
            page = http.get(url)
        assert page.status_code == 200, url
        scans = [q["sql"] for q in queries if "DISTINCT" in q["sql"] or "MIN(" in q["sql"] or "MAX(" in q["sql"]]
        assert scans == [], (url, scans)
    # The filters still offer every job type and event type, and filter
    listed = http.get("/admin/jobs/job/").content.decode()
    assert "?job_name__exact=api.tasks.long_running_task" in listed
    assert "?event_type__exact=job.failed" in http.get("/admin/webhooks/event/").content.decode()
    filtered = http.get("/admin/jobs/job/?job_name__exact=api.tasks.hello_world").content.decode()
    assert str(job.pk) in filtered and "long_running_task</td>" not in filtered


def analyze(*tables: str) -> None:
    """PostgreSQL's statistics of `tables` brought up to date, as autovacuum does (rows this
    test's transaction wrote included)."""
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"ANALYZE {table}")


def counts(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries if "COUNT(" in q["sql"]]


def test_a_large_tables_list_pages_on_its_estimated_size_counting_no_row(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a table of jobs PostgreSQL last saw with 25 rows, 5 added since, and lists that
    # estimate a table from 20 rows, 10 to a page
    monkeypatch.setattr(EstimatedCountPaginator, "estimate_from_rows", 20)
    monkeypatch.setattr(JobAdmin, "list_per_page", 10)
    owner = client_create(name="acme")

    def jobs(count: int, status: str) -> list[str]:
        return [str(Job.objects.create(owner=owner, job_name="api.tasks.hello_world", status=status).pk)
                for _ in range(count)]

    everyone = jobs(19, "SUCCESS") + jobs(6, "FAILURE")
    analyze("jobs_job")
    everyone += jobs(5, "SUCCESS")
    http = HttpClient()
    http.force_login(User.objects.create_superuser("admin", "admin@example.com", "pw"))

    # When the operator opens the list, and pages through it
    with CaptureQueriesContext(connection) as queries:
        first = http.get("/admin/jobs/job/").content.decode()
    counted = counts(queries)  # read before the next request, which empties the connection's log
    pages = [first] + [http.get(f"/admin/jobs/job/?p={n}").content.decode() for n in (2, 3)]

    # Then no row was counted: the list is about 25 jobs, in three pages, which hold all 30
    assert counted == []
    assert "About 25 jobs" in first
    assert '<a href="?p=3" class="end">3</a>' in first and "?p=4" not in first
    listed = [job for page in pages for job in re.findall(r'/admin/jobs/job/([0-9a-f-]{36})/change/', page)]
    assert sorted(listed) == sorted(everyone)

    # And a filtered list is counted exactly, over its filter only
    with CaptureQueriesContext(connection) as queries:
        failed = http.get("/admin/jobs/job/?status__exact=FAILURE").content.decode()
    counted = counts(queries)
    assert len(counted) == 1 and ' WHERE "jobs_job"."status" = ' in counted[0], counted
    assert "6 results" in failed and re.search(r"\n6 jobs\n", failed) and "About" not in failed
    assert failed.count("/change/") == 6


@pytest.mark.parametrize("path", ["/admin/jobs/job/", "/admin/jobs/jobresult/", "/admin/webhooks/delivery/",
                                  "/admin/webhooks/event/"])
def test_the_lists_of_the_tables_that_grow_with_traffic_count_no_row(monkeypatch: pytest.MonkeyPatch,
                                                                    path: str) -> None:
    # Given each such table large (from one row, for the test), its one row shown
    monkeypatch.setattr(EstimatedCountPaginator, "estimate_from_rows", 1)
    owner = client_create(name="acme")
    job = Job.objects.create(owner=owner, job_name="api.tasks.hello_world", status="SUCCESS")
    JobResult.objects.create(owner=owner, job=job, task_name=job.job_name, result="hi")
    event = Event.objects.create(owner=owner, subject_id=job.pk, event_type="job.succeeded", body=b"{}")
    Delivery.objects.create(owner=owner, event=event, subject_id=job.pk, url="https://receiver.example.com/")
    analyze("jobs_job", "jobs_jobresult", "webhooks_event", "webhooks_delivery")
    http = HttpClient()
    http.force_login(User.objects.create_superuser("admin", "admin@example.com", "pw"))

    with CaptureQueriesContext(connection) as queries:
        page = http.get(path)

    assert page.status_code == 200
    assert counts(queries) == []
    assert "About 1 " in page.content.decode()


# Each table's column a job's id is searched in, and by what index.
_SEARCHED_BY = {
    "jobs_job": ("id", "jobs_job_pkey"), "jobs_jobresult": ("job_id", "jobs_jobresult_job_id"),
    "webhooks_event": ("subject_id", "event_subject"), "webhooks_delivery": ("subject_id", "delivery_subject"),
}


@pytest.mark.parametrize(("path", "table"), [
    ("/admin/jobs/job/", "jobs_job"), ("/admin/jobs/jobresult/", "jobs_jobresult"),
    ("/admin/webhooks/event/", "webhooks_event"), ("/admin/webhooks/delivery/", "webhooks_delivery"),
])
def test_a_job_id_searched_in_a_large_tables_list_is_found_by_an_index(path: str, table: str) -> None:
    # Given jobs with their results, events and deliveries, PostgreSQL's statistics of them up to date
    owner = client_create(name="acme")
    jobs = Job.objects.bulk_create(Job(owner=owner, job_name="api.tasks.hello_world", status="SUCCESS")
                                   for _ in range(200))
    JobResult.objects.bulk_create(JobResult(owner=owner, job=job, task_name=job.job_name, result="hi") for job in jobs)
    events = Event.objects.bulk_create(Event(owner=owner, subject_id=job.pk, event_type="job.succeeded", body=b"{}")
                                       for job in jobs)
    Delivery.objects.bulk_create(Delivery(owner=owner, event=event, subject_id=event.subject_id,
                                          url="https://receiver.example.com/") for event in events)
    analyze(*_SEARCHED_BY)
    http = HttpClient()
    http.force_login(User.objects.create_superuser("admin", "admin@example.com", "pw"))

    # When an operator pastes a job's id (from a log line, the console, a client) in the search
    job = jobs[100]
    with CaptureQueriesContext(connection) as queries:
        page = http.get(path, {"q": f" {job.pk} "})

    # Then the list shows its rows alone, found by their index: a search matched the id as text
    # within every row's (`UPPER(id::text) LIKE '%…%'`, and within the URLs and client names),
    # which no index serves, reading the whole table twice a page, for the rows and their count
    assert page.status_code == 200
    assert "1 result" in page.content.decode()
    column, index = _SEARCHED_BY[table]
    searched = [q["sql"] for q in queries if f'FROM "{table}"' in q["sql"] and str(job.pk) in q["sql"]]
    assert searched, [q["sql"] for q in queries]
    for sql in searched:
        plan = plan_of(sql, seqscan=False)  # as PostgreSQL plans it on a large table
        assert "LIKE" not in sql and re.search(rf"Index (Only )?Scan using {index}\S* on {table}", plan), plan
        assert f"Index Cond: ({column} = '{job.pk}'::uuid)" in plan, plan


# Each large table's list, and the columns of a client's it reads no byte of: a job's JSON (its
# payload and result up to API_MAX_BODY_BYTES each), a result's, an event's body (the job whole).
_LARGE_COLUMNS = ['"jobs_job"."payload"', '"jobs_job"."result"', '"jobs_job"."step_input"', '"jobs_job"."progress"',
                  '"jobs_job"."error"', '"jobs_job"."metadata"', '"jobs_jobresult"."result"', '"webhooks_event"."body"']


def large_rows() -> tuple[list[Job], list[JobResult], list[Event], list[Delivery]]:
    """A client's three finished jobs with large payloads and results (its storage quota holds a
    thousand of 1 MB), their results, events (bodies carrying both) and failed deliveries."""
    owner = client_create(name="acme")
    big = {"blob": "x" * 200_000}
    jobs = Job.objects.bulk_create(Job(owner=owner, job_name="api.tasks.save_task_result_test_task", status="SUCCESS",
                                       payload=big, result=big, step_input=big) for _ in range(3))
    results = JobResult.objects.bulk_create(JobResult(owner=owner, job=job, task_name=job.job_name, result=big)
                                            for job in jobs)
    body = json.dumps({"type": "job.succeeded", "data": {"payload": big, "result": big}}).encode()
    events = Event.objects.bulk_create(Event(owner=owner, subject_id=job.pk, event_type="job.succeeded", body=body)
                                       for job in jobs)
    deliveries = Delivery.objects.bulk_create(Delivery(owner=owner, event=event, subject_id=event.subject_id,
                                                       url="https://receiver.example.com/", state="failed")
                                              for event in events)
    return jobs, results, events, deliveries


@pytest.mark.parametrize("path", ["/admin/jobs/job/", "/admin/jobs/jobresult/", "/admin/webhooks/delivery/",
                                  "/admin/webhooks/event/"])
def test_a_large_tables_list_reads_no_clients_payloads_results_or_bodies(path: str) -> None:
    # Given a client's jobs with large payloads and results, their results, events and deliveries
    jobs, results, events, deliveries = large_rows()
    http = HttpClient()
    http.force_login(User.objects.create_superuser("admin", "admin@example.com", "pw"))

    # When an operator opens the list
    with CaptureQueriesContext(connection) as queries:
        page = http.get(path)

    # Then it lists every row, reading none of those columns (a page of 100 jobs of 1 MB payloads
    # and results read 200 MB, 1.2 s; a page of results read each one's job, whole, a query a row)
    assert page.status_code == 200
    rows = {"/admin/jobs/job/": jobs, "/admin/jobs/jobresult/": results, "/admin/webhooks/delivery/": deliveries,
            "/admin/webhooks/event/": events}[path]
    listed = re.findall(rf'href="{path}([^/]+)/change/', page.content.decode())
    assert sorted(listed) == sorted(str(row.pk) for row in rows)
    read = [q["sql"][:200] for q in queries if any(column in q["sql"] for column in _LARGE_COLUMNS)]
    assert read == []


def test_redeliver_on_a_selection_reads_no_events_body() -> None:
    # Given a client's three failed deliveries of events with large bodies
    _, _, events, deliveries = large_rows()
    http = HttpClient()
    http.force_login(User.objects.create_superuser("admin", "admin@example.com", "pw"))

    # When an operator redelivers them from the list
    with CaptureQueriesContext(connection) as queries:
        answer = http.post("/admin/webhooks/delivery/", {
            "action": "redeliver", "_selected_action": [str(delivery.pk) for delivery in deliveries]})

    # Then each event is sent again, and no body was read to do it (the worker sends it by its id)
    assert answer.status_code == 302
    assert Delivery.objects.filter(event__in=events, redelivery=True).count() == 3
    assert [q["sql"][:200] for q in queries if '"webhooks_event"."body"' in q["sql"]] == []
