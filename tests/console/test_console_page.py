"""The console at /console/: staff only (the admin's login), and what each section shows."""
from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client as BrowserClient
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from console import counted, services
from jobs.models import Job
from tests.console.seed import (
    CHECKLIST,
    DOWN_HOST,
    FLAKY_HOST,
    GONE_HOST,
    HELLO,
    PAUSED_HOST,
    URL_TOKEN,
    seed,
)
from webhooks.models import Delivery, Endpoint

pytestmark = pytest.mark.django_db


def section(html: str, name: str) -> str:
    return html.split(f'<section id="{name}">', 1)[1].split("</section>", 1)[0]


def text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


def row_of(html: str, first_cell: str) -> list[str]:
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", html, re.S):
        cells = [text(cell) for cell in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in {text(html)}")


def test_the_console_sends_everyone_else_to_the_admins_login() -> None:
    anonymous = BrowserClient()
    User.objects.create_user("clerk", password="pw", is_staff=False)
    clerk = BrowserClient()
    clerk.login(username="clerk", password="pw")

    for browser in (anonymous, clerk):
        response = browser.get("/console/")
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/?next=/console/")


def test_each_section_shows_what_is_stuck_what_failed_and_who_is_down(staff: BrowserClient) -> None:
    # Given jobs in every status, failing receivers and workers up, lost and stopped
    seeded = seed()

    # When an operator opens the console
    response = staff.get("/console/")

    # Then jobs by type and status count the unfinished ones now and the finals of the last hour
    assert response.status_code == 200
    html = response.content.decode()
    jobs = section(html, "jobs")
    # (PENDING counts the scheduled job too; the failure 2 h ago is in no figure)
    assert row_of(jobs, HELLO)[1:7] == ["3", "0", "0", "3", "0", "1"]
    assert row_of(jobs, CHECKLIST)[1:8] == ["0", "0", "1", "0", "2", "0", "100.0 %"]
    assert row_of(jobs, "all")[1:] == ["3", "1", "1", "3", "3", "1", "42.9 %"]
    # ...the oldest pending first (the scheduled job is not waiting yet), the longest running,
    pending = section(html, "oldest-pending")
    assert f"/admin/jobs/job/{seeded.oldest_pending.pk}/change/" in pending
    assert pending.count("<tr>") == 1 + 2
    assert row_of(pending, str(seeded.oldest_pending.pk)[:8])[3].startswith("20 min")
    running = section(html, "longest-running")
    assert row_of(running, str(seeded.longest_running.pk)[:8])[1:4] == [
        "api.tasks.long_running_task", seeded.client.name, "STARTED"]
    # ...every queue with its consumers (a lost worker consumes nothing),
    queues = section(html, "queues")
    assert [row_of(queues, name)[2] for name in ("jobs", "jobs_long", "maintenance", "webhooks")] == [
        "1", "0 (none)", "0 (none)", "0 (none)"]
    # ...the failure rate and the top errors, each linking to its latest job,
    failures = section(html, "failures")
    assert "3 of 7 finished: 42.9 %" in text(failures)
    assert row_of(failures, "ValueError")[1:3] == ["2", "no checklist (3)"]
    assert f"/admin/jobs/job/{seeded.failed[0].pk}/change/" in failures
    assert row_of(failures, "time_limit_exceeded")[1] == "1"
    assert "OldError" not in failures
    # ...the receivers failing, with their last error and the admin's deliveries,
    receivers = section(html, "receivers")
    assert row_of(receivers, DOWN_HOST)[1:4] == ["1", "1", "Connection failed: [Errno 111] Connection refused"]
    assert row_of(receivers, FLAKY_HOST)[1:4] == ["1", "0", "HTTP 503"]
    assert f"/admin/webhooks/delivery/?failing_host={DOWN_HOST}" in receivers
    assert "fine.example" not in receivers
    # ...the disabled endpoints by reason, and each with its held deliveries, the most first,
    # naming its receiver's host and never the rest of its URL,
    disabled = section(html, "disabled-endpoints")
    assert "2 disabled, 4 deliveries held" in text(disabled)
    assert row_of(disabled, "failing")[1:] == ["1", "3"] and row_of(disabled, "client")[1:] == ["1", "1"]
    failing, paused = (str(endpoint.pk)[:8] for endpoint in seeded.disabled)
    assert row_of(disabled, failing)[1:4] == [seeded.client.name, GONE_HOST, "failing"]
    assert row_of(disabled, failing)[4].startswith("2 h") and row_of(disabled, failing)[5] == "3"
    assert row_of(disabled, paused)[1:4] == [seeded.client.name, PAUSED_HOST, "client"]
    assert text(disabled).index(failing) < text(disabled).index(paused)
    assert f"/admin/webhooks/endpoint/{seeded.disabled[0].pk}/change/" in disabled
    assert URL_TOKEN not in html and "fine.example/endpoint" not in disabled
    # ...and the workers with their state
    workers = section(html, "workers")
    assert [row_of(workers, name)[1] for name in ("jobs@seeded", "webhooks@seeded", "jobs_long@seeded")] == [
        "up", "lost", "stopped"]


def test_the_page_refreshes_its_figures_from_a_fragment(staff: BrowserClient) -> None:
    seed()

    page = staff.get("/console/")
    fragment = staff.get("/console/?fragment=1")

    assert 'src="/static/console/console.js"' in page.content.decode()
    assert fragment.status_code == 200 and fragment["X-Console-Fragment"] == "1"
    assert "<html" not in fragment.content.decode()
    for name in ("jobs", "oldest-pending", "longest-running", "queues", "failures", "receivers",
                 "disabled-endpoints", "workers"):
        assert f'<section id="{name}">' in fragment.content.decode()
    assert "no-cache" in fragment["Cache-Control"]


def test_each_row_links_to_an_admin_page_that_has_the_action(staff: BrowserClient) -> None:
    seeded = seed()

    job_page = staff.get(f"/admin/jobs/job/{seeded.oldest_pending.pk}/change/").content.decode()
    delivery = seeded.failing_delivery
    assert delivery is not None
    delivery_page = staff.get(f"/admin/webhooks/delivery/{delivery.pk}/change/").content.decode()

    assert f"/admin/jobs/job/{seeded.oldest_pending.pk}/actions/cancel/" in job_page
    assert f"/admin/webhooks/delivery/{delivery.pk}/actions/redeliver/" in delivery_page



def _figures(staff: BrowserClient) -> Any:
    """A refresh's figures, every count made anew (as after COUNTED_FOR_SECONDS)."""
    counted.forget_all()
    return staff.get("/console/?fragment=1").content.decode()


def _page_queries(queries: CaptureQueriesContext) -> int:
    """How many queries a refresh made for its figures: less the readiness check's `SELECT 1`,
    which runs at most once per READYZ_CHECK_SECONDS, by the clock, whatever the page holds."""
    return sum(query["sql"] != "SELECT 1" for query in queries)


def test_an_empty_service_says_so_in_each_section(staff: BrowserClient) -> None:
    html = _figures(staff)

    assert "No job is waiting to start." in html
    assert "No job is running." in html
    assert "No job failed in the last hour." in html
    assert "Every receiver takes its deliveries." in html
    assert "No endpoint is disabled." in html


def test_a_worker_shut_down_cleanly_stays_stopped_when_its_last_heartbeat_lands_after_the_mark(
    staff: BrowserClient,
) -> None:
    # Given a worker that has reported since it started 5 minutes ago
    started = timezone.now() - timedelta(minutes=5)
    run = {"hostname": "jobs@racing", "queues": ["jobs"], "concurrency": 2, "pid": 4242, "started_at": started}
    services.worker_seen(**run)

    # When it shuts down, and a heartbeat its thread was writing lands just after the mark
    services.worker_stopped(hostname="jobs@racing", started_at=started)
    services.worker_seen(**run)

    # Then the console shows it stopped (not up, then lost once its beats are 30 s old)
    assert row_of(section(_figures(staff), "workers"), "jobs@racing")[1] == "stopped"
    # ...until the same host starts a worker again
    services.worker_seen(**{**run, "pid": 4343, "started_at": timezone.now()})
    assert row_of(section(_figures(staff), "workers"), "jobs@racing")[1] == "up"


def test_a_worker_shutting_down_leaves_a_newer_run_of_its_name_up(staff: BrowserClient) -> None:
    # Given a worker that started 5 minutes ago, and a newer run of the same name (a restarted
    # container reusing it) that has reported since, while the old one shuts down
    old = timezone.now() - timedelta(minutes=5)
    run = {"hostname": "jobs@reused", "queues": ["jobs"], "concurrency": 2, "pid": 4242}
    services.worker_seen(**run, started_at=old)
    newer = timezone.now()
    services.worker_seen(**{**run, "pid": 4343}, started_at=newer)

    # When the old run's shutdown is marked
    services.worker_stopped(hostname="jobs@reused", started_at=old)

    # Then the newer run is still up; its own shutdown marks it stopped
    assert row_of(section(_figures(staff), "workers"), "jobs@reused")[1] == "up"
    services.worker_stopped(hostname="jobs@reused", started_at=newer)
    assert row_of(section(_figures(staff), "workers"), "jobs@reused")[1] == "stopped"

def test_the_disabled_endpoints_are_the_fifty_holding_most_read_in_as_many_queries_as_two(
    staff: BrowserClient,
) -> None:
    # Given two disabled endpoints, and the queries a refresh makes then
    seeded = seed()
    with CaptureQueriesContext(connection) as few:
        _figures(staff)

    # When 58 more are disabled, none holding a delivery
    Endpoint.objects.bulk_create([
        Endpoint(owner=seeded.client, url=f"https://idle-{n}.example/", enabled=False,
                 disabled_reason=Endpoint.DisabledReason.CLIENT)
        for n in range(58)
    ])
    with CaptureQueriesContext(connection) as many:
        html = _figures(staff)

    # Then the totals count all 60, the list shows 50 (the two holding deliveries first), and
    # the refresh made no more queries than before
    disabled = section(html, "disabled-endpoints")
    assert "60 disabled, 4 deliveries held" in text(disabled)
    assert row_of(disabled, "client")[1:] == ["59", "1"]
    assert disabled.count("/admin/webhooks/endpoint/") == 50 + 1  # and the link to them all
    assert all(str(endpoint.pk)[:8] in disabled for endpoint in seeded.disabled)
    assert _page_queries(many) == _page_queries(few)


def _held_reads(queries: CaptureQueriesContext) -> list[str]:
    return [query["sql"] for query in queries if '"webhooks_delivery"' in query["sql"]
            and Delivery.State.ENDPOINT_DISABLED in query["sql"]]


def test_a_refresh_counts_the_held_deliveries_once_from_their_index_alone(staff: BrowserClient) -> None:
    # Given an endpoint disabled for failing (three deliveries held) and one by its client (one)
    seed()

    # When the page refreshes
    with CaptureQueriesContext(connection) as queries:
        html = _figures(staff)

    # Then its totals and its list agree, from one read of the held deliveries that names no
    # column but those their index (delivery_held) holds: no row is read from the table
    disabled = section(html, "disabled-endpoints")
    assert "2 disabled, 4 deliveries held" in text(disabled)
    assert row_of(disabled, "failing")[1:] == ["1", "3"]
    assert row_of(disabled, "client")[1:] == ["1", "1"]
    [read] = _held_reads(queries)
    assert set(re.findall(r'"webhooks_delivery"\."(\w+)"', read)) == {"endpoint_id", "state"}


def test_the_held_deliveries_are_read_in_as_many_queries_however_many_are_held(staff: BrowserClient) -> None:
    # Given the seeded endpoints, and the queries a refresh makes then
    seeded = seed()
    with CaptureQueriesContext(connection) as few:
        _figures(staff)

    # When the endpoint its client disabled holds 20 more
    paused = seeded.disabled[1]
    for delivery in Delivery.objects.filter(endpoint=paused)[:1]:
        Delivery.objects.bulk_create([
            Delivery(event=delivery.event, owner=seeded.client, subject_id=delivery.subject_id, endpoint=paused,
                     url=paused.url, state=Delivery.State.ENDPOINT_DISABLED)
            for _ in range(20)
        ])
    with CaptureQueriesContext(connection) as many:
        html = _figures(staff)

    # Then it is counted, listed first, and the refresh made no more queries than before
    disabled = section(html, "disabled-endpoints")
    assert "2 disabled, 24 deliveries held" in text(disabled)
    assert row_of(disabled, "client")[1:] == ["1", "21"]
    listed = re.findall(r"/admin/webhooks/endpoint/([0-9a-f-]+)/change/", disabled)
    assert listed == [str(paused.pk), str(seeded.disabled[0].pk)]
    assert _page_queries(many) == _page_queries(few)


def test_a_refresh_reads_no_jobs_payload_or_result(staff: BrowserClient) -> None:
    # Given failed, pending and running jobs whose payloads and results are large (a client's
    # up to API_MAX_BODY_BYTES each: a failure storm of them is 500 rows the failures read)
    seeded = seed()
    big = {"blob": "x" * 300_000}
    Job.objects.filter(owner=seeded.client).update(payload=big, result=big)

    # When the page refreshes
    with CaptureQueriesContext(connection) as queries:
        html = _figures(staff)

    # Then it shows the same figures without reading those columns
    assert row_of(section(html, "failures"), "ValueError")[1:3] == ["2", "no checklist (3)"]
    assert f"/admin/jobs/job/{seeded.oldest_pending.pk}/change/" in section(html, "oldest-pending")
    read = [query["sql"] for query in queries if '"jobs_job"."payload"' in query["sql"]
            or '"jobs_job"."result"' in query["sql"]]
    assert read == []


def test_a_staff_user_sees_the_figures_only_with_the_permission_to_view_jobs_and_deliveries() -> None:
    # Given every client's jobs and deliveries, and staff users without and with the permissions
    # the admin asks before it shows them
    seeded = seed()
    clerk = User.objects.create_user("clerk", is_staff=True)
    operator = User.objects.create_user("operator", is_staff=True)
    operator.user_permissions.add(*Permission.objects.filter(codename__in=["view_job", "view_delivery"]))
    browsers = {}
    for user in (clerk, operator):
        browsers[user.username] = BrowserClient()
        browsers[user.username].force_login(user)

    # When each opens the console
    refused = browsers["clerk"].get("/console/")
    fragment = browsers["clerk"].get("/console/?fragment=1")
    shown = browsers["operator"].get("/console/")

    # Then only the one who may view them sees a client, its jobs' errors and its receivers
    assert refused.status_code == fragment.status_code == 403
    for body in (refused.content.decode(), fragment.content.decode()):
        assert seeded.client.name not in body and DOWN_HOST not in body and "no checklist" not in body
    assert shown.status_code == 200 and seeded.client.name in shown.content.decode()
