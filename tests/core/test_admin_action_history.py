"""An admin action (cancel, redeliver, disable, enable) is recorded as Django records its own
changes: an entry in each row's history naming the staff user, and one log line for the action."""
from __future__ import annotations

import logging

import pytest
from django.contrib.auth.models import User
from django.test import Client as BrowserClient

from core.services import client_create
from jobs.models import Job
from webhooks.models import Endpoint

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator() -> BrowserClient:
    browser = BrowserClient()
    browser.force_login(User.objects.create_superuser("night-operator", "op@example.com", "pw"))
    return browser


def test_a_canceled_jobs_history_names_who_canceled_it(operator: BrowserClient,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    # Given two queued jobs and a finished one
    owner = client_create(name="acme")
    queued = [Job.objects.create(owner=owner, job_name="api.tasks.hello_world", status=Job.Status.PENDING)
              for _ in range(2)]
    finished = Job.objects.create(owner=owner, job_name="api.tasks.hello_world", status=Job.Status.SUCCESS)

    # When an operator cancels the three from the jobs' list
    with caplog.at_level(logging.INFO, logger="core.admin_site"):
        operator.post("/admin/jobs/job/", {"action": "cancel", "index": 0,
                                           "_selected_action": [job.pk for job in [*queued, finished]]})

    # Then each job canceled says so in its history, with who did it; the finished one, left as
    # it was, says nothing
    for job in queued:
        history = operator.get(f"/admin/jobs/job/{job.pk}/history/").content.decode()
        assert "Canceled (admin action)." in history and "night-operator" in history
    assert "Canceled (admin action)." not in operator.get(f"/admin/jobs/job/{finished.pk}/history/").content.decode()
    # And the log has one line for the action
    lines = [r.getMessage() for r in caplog.records if r.name == "core.admin_site"]
    assert lines == ["Admin action on 2 jobs by night-operator: Canceled (admin action)."]


def test_an_endpoint_disabled_from_the_admin_says_by_whom(operator: BrowserClient) -> None:
    endpoint = Endpoint.objects.create(owner=client_create(name="acme"), url="https://hooks.example.com/",
                                       event_types=["job.succeeded"])

    operator.post("/admin/webhooks/endpoint/", {"action": "disable", "index": 0, "_selected_action": [endpoint.pk]})

    endpoint.refresh_from_db()
    history = operator.get(f"/admin/webhooks/endpoint/{endpoint.pk}/history/").content.decode()
    assert not endpoint.enabled
    assert "Disabled (admin action)." in history and "night-operator" in history
