"""The operators' reads of the jobs (/metrics, the console) read the entries they show, not
every pending job (docs/reliability.md, "The operators' reads")."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from console import selectors
from core.services import client_create
from jobs.models import Job
from tests.conftest import plan_of, plan_rows_read

pytestmark = pytest.mark.django_db

HELLO = "api.tasks.hello_world"


def test_the_oldest_job_waiting_for_a_worker_is_read_without_reading_every_pending_job(settings: Any) -> None:
    # Given a running cap of 1; a client at it (one job running) with 300 jobs held, due 10 to 15
    # hours ago; another client's 300 jobs waiting for dispatch (due over the last 300 minutes),
    # 100 scheduled for tomorrow, 200 in the broker (handed over in the last 200 minutes), and
    # one scheduled job that fell due 8 hours ago, before all of them
    settings.JOB_MAX_RUNNING_PER_CLIENT = 1
    busy, other = client_create(name="busy"), client_create(name="other")
    now = timezone.now()
    Job.objects.create(owner=busy, job_name=HELLO, status=Job.Status.STARTED, started_at=now, dispatched_at=now)
    Job.objects.bulk_create([Job(owner=busy, job_name=HELLO, created_at=now - timedelta(hours=10, minutes=n))
                             for n in range(300)])
    Job.objects.bulk_create([Job(owner=other, job_name=HELLO, created_at=now - timedelta(minutes=n))
                             for n in range(300)])
    Job.objects.bulk_create([Job(owner=other, job_name=HELLO, created_at=now - timedelta(days=2),
                                 run_at=now + timedelta(days=1)) for _ in range(100)])
    Job.objects.bulk_create([Job(owner=other, job_name=HELLO, created_at=now - timedelta(minutes=n),
                                 dispatched_at=now - timedelta(minutes=n)) for n in range(200)])
    oldest = Job.objects.create(owner=other, job_name=HELLO, created_at=now - timedelta(hours=9),
                                run_at=now - timedelta(hours=8))

    # When /metrics reads how long the oldest has waited
    with CaptureQueriesContext(connection) as queries:
        age = selectors.oldest_pending_age_seconds(now=now)
    looks = [query["sql"] for query in queries.captured_queries if "jobs_jobcounts" in query["sql"]
             or "dispatched_at\" IS NOT NULL" in query["sql"]]

    # Then it is the scheduled job's wait since its run_at, not the held jobs' (older), read from
    # the first entries of indexes: the jobs in the broker's (job_in_broker), and each client's
    # waiting for dispatch (job_waiting), only the other's, the held client's looked up by its
    # count row. Run again where the table is too small for PostgreSQL to prefer an index on its
    # own, they read a few jobs, where through job_active_since every held job was read (301)
    assert age == pytest.approx(8 * 3600)
    assert selectors.jobs_oldest_pending(now=now)[0].pk == oldest.pk
    assert len(looks) == 2, queries.captured_queries
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE jobs_job")
    read = [plan_rows_read(plan_of(look, analyze=True, seqscan=False), "jobs_job") for look in looks]
    assert sum(read) <= 4, [plan_of(look, analyze=True, seqscan=False) for look in looks]
