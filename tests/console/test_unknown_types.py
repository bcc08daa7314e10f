"""The unfinished jobs of types this code does not know (a deploy removed or renamed their type),
as the on-call engineer sees them: a figure on /metrics, and the console naming the types and the
command that fails them (jobs/unknown_types.py)."""
from __future__ import annotations

import pytest
from django.test import Client as BrowserClient
from django.utils import timezone

from core.services import client_create
from jobs.models import Job
from tests.console.test_metrics import TOKEN, parse, value

pytestmark = pytest.mark.django_db

RETIRED = "api.tasks.retired_in_a_deploy"


def test_metrics_and_the_console_count_the_unfinished_jobs_of_unknown_types(staff: BrowserClient) -> None:
    # Given two unfinished jobs of a removed type, one finished, and one of a known type
    owner = client_create(name="retired-on-the-console")
    Job.objects.create(owner=owner, job_name=RETIRED)
    Job.objects.create(owner=owner, job_name=RETIRED, status=Job.Status.STARTED, started_at=timezone.now())
    Job.objects.create(owner=owner, job_name=RETIRED, status=Job.Status.FAILURE, finished_at=timezone.now())
    Job.objects.create(owner=owner, job_name="api.tasks.hello_world")

    # When the on-call engineer looks
    scraped = parse(BrowserClient().get("/metrics", **TOKEN).content.decode())
    page = staff.get("/console/").content.decode()

    # Then both count the two unfinished ones that cannot run, and the console says what to run
    assert value(scraped, "jobapi_jobs_of_unknown_types") == 2
    assert f"{RETIRED}</a> <strong class=\"bad\">not registered</strong>" in page
    assert "2 unfinished job(s) of types this code does not register" in page
    assert "manage.py jobs_fail_unknown_types --fail" in page


def test_with_none_the_figure_is_0_and_the_console_says_nothing(staff: BrowserClient) -> None:
    Job.objects.create(owner=client_create(name="known-only"), job_name="api.tasks.hello_world")

    scraped = parse(BrowserClient().get("/metrics", **TOKEN).content.decode())
    page = staff.get("/console/").content.decode()

    assert ("jobapi_jobs_of_unknown_types", frozenset()) in scraped
    assert value(scraped, "jobapi_jobs_of_unknown_types") == 0
    assert "not registered" not in page and "jobs_fail_unknown_types" not in page
