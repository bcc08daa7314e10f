"""The sweeper's claim reads the clients that have jobs waiting, not every client's count row:
its cost grows with the work at hand, not with the clients ever made (docs/reliability.md, "The
workers' reads")."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.services import client_create
from jobs import sql
from jobs.models import Job, JobCounts
from tests.conftest import plan_of, plan_rows_read

pytestmark = pytest.mark.django_db

HELLO = "api.tasks.hello_world"


def test_the_sweepers_claim_reads_the_count_rows_of_the_clients_with_jobs_waiting_only() -> None:
    # Given 300 clients, each with its count row, of which two have jobs waiting: one a job due
    # now, the other one scheduled for tomorrow
    idle = [client_create(name=f"idle-{n}") for n in range(298)]
    due, later = client_create(name="due"), client_create(name="later")
    now = timezone.now()
    Job.objects.create(owner=due, job_name=HELLO, created_at=now - timedelta(minutes=1))
    Job.objects.create(owner=later, job_name=HELLO, run_at=now + timedelta(days=1))
    assert JobCounts.objects.filter(owner__in=idle).count() == len(idle)

    # When the sweeper claims what is due (no running cap)
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        sql.jobs_waiting_claim(now=now, grace_before=now, cap=0, limit=500)
        transaction.set_rollback(True)
    [claim] = [query["sql"] for query in queries.captured_queries if "UPDATE" in query["sql"]]

    # Then, run again where the table is too small for PostgreSQL to prefer an index on its own,
    # it reads the two count rows of the clients with jobs waiting, and claims the one due job
    plan = plan_of(claim, analyze=True, seqscan=False)
    assert plan_rows_read(plan, "jobs_jobcounts") == 2, plan
    assert "rows=1 loops=1" in plan.splitlines()[0], plan
