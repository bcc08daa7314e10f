"""The operators' reads of the jobs (/metrics, the console) read the entries they show, not
every pending job (docs/reliability.md, "The operators' reads")."""
from __future__ import annotations

from datetime import timedelta

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


def test_the_oldest_pending_job_is_read_without_reading_every_pending_job() -> None:
    # Given 300 jobs waiting (due over the last 300 minutes), 100 scheduled for tomorrow, and one
    # scheduled job that fell due before all of them
    owner = client_create(name="busy")
    now = timezone.now()
    Job.objects.bulk_create([Job(owner=owner, job_name=HELLO, created_at=now - timedelta(minutes=n))
                             for n in range(300)])
    Job.objects.bulk_create([Job(owner=owner, job_name=HELLO, created_at=now - timedelta(days=2),
                                 run_at=now + timedelta(days=1)) for _ in range(100)])
    oldest = Job.objects.create(owner=owner, job_name=HELLO, created_at=now - timedelta(hours=9),
                                run_at=now - timedelta(hours=8))

    # When /metrics reads how long the oldest has waited
    with CaptureQueriesContext(connection) as queries:
        age = selectors.oldest_pending_age_seconds(now=now)
    [look] = [query["sql"] for query in queries.captured_queries]

    # Then it is the scheduled job's wait since its run_at, read from the first entry of an
    # index: run again where the table is too small for PostgreSQL to prefer an index on its
    # own, it reads two jobs (the oldest, and the next one, which ends the oldest's group of
    # equal times), where before every pending one was read and sorted
    assert age == pytest.approx(8 * 3600)
    assert selectors.jobs_oldest_pending(now=now)[0].pk == oldest.pk
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE jobs_job")
    plan = plan_of(look, analyze=True, seqscan=False)
    assert plan_rows_read(plan, "jobs_job") == 2, plan
