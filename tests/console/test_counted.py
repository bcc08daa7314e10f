"""The operators' counts that grow with what they count (jobs by status, the last hour's errors,
the deliveries pending and held): each made once in COUNTED_FOR_SECONDS by a process, however many consoles refresh
and scrapers ask, its figures kept until the next count and then exact again."""
from __future__ import annotations

import re
import uuid

import pytest
from django.db import connection
from django.test import Client as BrowserClient
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from console.counted import COUNTED_FOR_SECONDS
from jobs.models import Job
from tests.console.seed import HELLO, seed
from tests.console.test_console_page import row_of, section, text
from tests.console.test_metrics import TOKEN, parse, value
from webhooks.models import Delivery, Event

pytestmark = pytest.mark.django_db


def _refresh(staff: BrowserClient) -> str:
    return staff.get("/console/?fragment=1").content.decode()


def _scrape() -> dict:
    response = BrowserClient().get("/metrics", **TOKEN)
    assert response.status_code == 200
    return parse(response.content.decode())


def _counts(queries: CaptureQueriesContext) -> dict[str, int]:
    """How many of the queries made each count whose cost grows with what it counts."""
    sqls = [query["sql"] for query in queries]
    return {
        "jobs": sum('FROM "jobs_job"' in sql and "GROUP BY" in sql and '"job_name"' in sql for sql in sqls),
        "pending": sum('FROM "webhooks_delivery"' in sql and "COUNT(*)" in sql and "'pending'" in sql
                       and "GROUP BY" not in sql for sql in sqls),
        "held": sum('FROM "webhooks_delivery"' in sql and "'endpoint_disabled'" in sql and "GROUP BY" in sql
                    for sql in sqls),
        "errors": sum('FROM "jobs_job"' in sql and "GROUP BY" in sql and '"job_name"' not in sql
                      and "'FAILURE'" in sql for sql in sqls),
    }


@pytest.mark.parametrize(("counted_for", "every_read"), [(COUNTED_FOR_SECONDS, False), (0.0, True)])
def test_two_refreshes_and_a_scrape_count_the_jobs_and_deliveries_once(
    staff: BrowserClient, monkeypatch: pytest.MonkeyPatch, counted_for: float, every_read: bool,
) -> None:
    # Given jobs in every status and deliveries pending and held
    seed()
    monkeypatch.setattr("console.counted.COUNTED_FOR_SECONDS", counted_for)

    # When two consoles refresh and Prometheus scrapes, within COUNTED_FOR_SECONDS
    with CaptureQueriesContext(connection) as queries:
        pages = [_refresh(staff) for _ in range(2)]
        samples = _scrape()

    # Then the jobs by status were counted once (its two queries: the jobs not final, those
    # finished in the last hour; each read counts when the interval is 0), and so were the
    # pending deliveries (the scrape alone shows them), the held ones and the last hour's errors
    # (the pages alone show them), and every read shows the same figures
    reads = 3 if every_read else 1
    assert _counts(queries) == {"jobs": 2 * reads, "pending": 1, "held": reads, "errors": 2 if every_read else 1}
    for page in pages:
        assert row_of(section(page, "jobs"), "all")[1:4] == ["3", "1", "1"]
        assert row_of(section(page, "failures"), "ValueError")[1] == "2"
        assert "2 disabled, 4 deliveries held" in text(section(page, "disabled-endpoints"))
    assert value(samples, "jobapi_jobs", status="PENDING") == 3
    assert value(samples, "jobapi_webhook_pending_deliveries") == 2
    assert value(samples, "jobapi_webhook_held_deliveries") == 4


def test_the_figures_keep_their_count_until_the_next_then_count_what_changed(
    staff: BrowserClient, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a console and a scrape that counted the seeded jobs and deliveries
    seeded = seed()
    clock = [1000.0]
    monkeypatch.setattr("console.counted.time.monotonic", lambda: clock[0])
    first = _refresh(staff)
    _scrape()
    counted_at = re.search(r"counted (\d\d:\d\d:\d\d) UTC", section(first, "jobs"))
    assert counted_at
    assert "failing receivers and held deliveries counted at most every 15 s" in text(first)

    # When a job is submitted, one finishes, one fails, a delivery falls pending and one is
    # held, within the interval
    Job.objects.create(owner=seeded.client, job_name=HELLO, status=Job.Status.PENDING)
    Job.objects.create(owner=seeded.client, job_name=HELLO, status=Job.Status.FAILURE, finished_at=timezone.now(),
                       error={"type": "NewError", "message": "since the count"})
    Job.objects.filter(pk=seeded.longest_running.pk).update(status=Job.Status.SUCCESS, finished_at=timezone.now())
    event = Event.objects.create(owner=seeded.client, subject_id=uuid.uuid4(), event_type="job.succeeded", body=b"{}")
    Delivery.objects.create(event=event, owner=seeded.client, subject_id=event.subject_id, url="https://a.example/",
                            state=Delivery.State.PENDING)
    Delivery.objects.create(event=event, owner=seeded.client, subject_id=event.subject_id,
                            endpoint=seeded.disabled[0], url=seeded.disabled[0].url,
                            state=Delivery.State.ENDPOINT_DISABLED)
    clock[0] += COUNTED_FOR_SECONDS - 1
    kept_page, kept = _refresh(staff), _scrape()

    # Then the figures are those of the count, which the page still dates
    assert row_of(section(kept_page, "jobs"), "all")[1:6] == ["3", "1", "1", "3", "3"]
    assert f"counted {counted_at[1]} UTC" in section(kept_page, "jobs")
    assert "4 deliveries held" in text(section(kept_page, "disabled-endpoints"))
    assert "NewError" not in section(kept_page, "failures")
    assert value(kept, "jobapi_jobs", status="PENDING") == 3
    assert value(kept, "jobapi_webhook_pending_deliveries") == 2
    assert value(kept, "jobapi_webhook_held_deliveries") == 4

    # and once the interval has passed, each count is made again, exact
    clock[0] += 1
    recounted_page, recounted = _refresh(staff), _scrape()
    assert row_of(section(recounted_page, "jobs"), "all")[1:6] == ["4", "0", "1", "4", "4"]
    assert row_of(section(recounted_page, "failures"), "NewError")[1] == "1"
    assert "5 deliveries held" in text(section(recounted_page, "disabled-endpoints"))
    assert value(recounted, "jobapi_jobs", status="PENDING") == 4
    assert value(recounted, "jobapi_jobs", status="STARTED") == 0
    assert value(recounted, "jobapi_webhook_pending_deliveries") == 3
    assert value(recounted, "jobapi_webhook_held_deliveries") == 5
