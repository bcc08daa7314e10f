"""An admin action (cancel, redeliver, disable, enable) is recorded as Django records its own
changes: an entry in each row's history naming the staff user, and one log line for the action."""
from __future__ import annotations

import logging
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.db import OperationalError
from django.test import Client as BrowserClient
from django.utils import timezone

from core.services import client_create
from jobs import admin as jobs_admin
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
        assert "Canceled (admin action)." in operator.get(f"/admin/jobs/job/{job.pk}/history/").content.decode()
    assert _history(queued) == {(str(job.pk), "night-operator", "Canceled (admin action).") for job in queued}
    assert "Canceled (admin action)." not in operator.get(f"/admin/jobs/job/{finished.pk}/history/").content.decode()
    # And the log has one line for the action
    lines = [r.getMessage() for r in caplog.records if r.name == "core.admin_site"]
    assert lines == ["Admin action on 2 jobs by night-operator: Canceled (admin action)."]


def test_a_jobs_cancel_from_its_page_says_what_became_of_it(operator: BrowserClient) -> None:
    # Given a queued job, a running one and a finished one
    owner = client_create(name="acme")

    def job(status: str, **fields: Any) -> Job:
        return Job.objects.create(owner=owner, job_name="api.tasks.hello_world", status=status,
                                  dispatched_at=timezone.now(), **fields)

    queued, finished = job(Job.Status.PENDING), job(Job.Status.SUCCESS)
    running = job(Job.Status.STARTED, started_at=timezone.now(), step_started_at=timezone.now())

    # When an operator presses Cancel on each one's page
    said = {job.pk: _messages(operator.post(f"/admin/jobs/job/{job.pk}/actions/cancel/", follow=True))
            for job in (queued, running, finished)}

    # Then the queued one is canceled, and its history and the admin's recent actions name it
    # REVOKED (they named it PENDING, as it was before the cancel)
    assert said[queued.pk] == ["Canceled 1 job(s)."]
    assert "Canceled (admin action)." in operator.get(f"/admin/jobs/job/{queued.pk}/history/").content.decode()
    recent = operator.get("/admin/").content.decode()
    assert f"api.tasks.hello_world {queued.pk} (REVOKED)" in recent
    # And the running one is asked to stop, as its page, its history and the recent actions say
    # (they said it was canceled, while it still ran)
    assert said[running.pk] == ["Asked 1 running job(s) to stop: each stops within its running step."]
    assert ("Cancel requested (admin action): STARTED, it stops within its running step."
            in operator.get(f"/admin/jobs/job/{running.pk}/history/").content.decode())
    assert f"api.tasks.hello_world {running.pk} (STARTED)" in recent
    # And the finished one is left as it was: its page says so, its history has nothing
    assert said[finished.pk] == ["1 job(s) were final already: left as they are."]
    assert not LogEntry.objects.filter(object_id=str(finished.pk)).exists()
    assert {str(entry) for entry in LogEntry.objects.all()} == {
        f"Changed “api.tasks.hello_world {queued.pk} (REVOKED)” — Canceled (admin action).",
        (f"Changed “api.tasks.hello_world {running.pk} (STARTED)” — Cancel requested (admin action): STARTED, "
         "it stops within its running step."),
    }


def test_an_endpoint_disabled_from_the_admin_says_by_whom(operator: BrowserClient) -> None:
    endpoint = Endpoint.objects.create(owner=client_create(name="acme"), url="https://hooks.example.com/",
                                       event_types=["job.succeeded"])

    operator.post("/admin/webhooks/endpoint/", {"action": "disable", "index": 0, "_selected_action": [endpoint.pk]})

    endpoint.refresh_from_db()
    history = operator.get(f"/admin/webhooks/endpoint/{endpoint.pk}/history/").content.decode()
    assert not endpoint.enabled
    assert "Disabled (admin action)." in history
    assert _history([endpoint]) == {(str(endpoint.pk), "night-operator", "Disabled (admin action).")}


def test_the_jobs_an_action_canceled_before_a_failure_say_so(operator: BrowserClient,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # Given three queued jobs, and a database that fails the action at its third
    owner = client_create(name="acme")
    queued = [Job.objects.create(owner=owner, job_name="api.tasks.hello_world", status=Job.Status.PENDING)
              for _ in range(3)]
    cancel = jobs_admin.job_cancel
    calls: list[Any] = []

    def cancel_until_the_third(*, owner: Any, job_id: Any) -> Job:
        calls.append(job_id)
        if len(calls) == 3:  # whichever the list shows third
            raise OperationalError("the database went away")
        return cancel(owner=owner, job_id=job_id)

    monkeypatch.setattr(jobs_admin, "job_cancel", cancel_until_the_third)

    # When an operator cancels the three from the jobs' list
    with pytest.raises(OperationalError):
        operator.post("/admin/jobs/job/", {"action": "cancel", "index": 0,
                                           "_selected_action": [job.pk for job in queued]})

    # Then the two it canceled say so in their history, though the action failed at the third,
    # where nothing was written (sent again, the action finds them final: never written)
    canceled = [job for job in queued if Job.objects.get(pk=job.pk).status == Job.Status.REVOKED]
    assert len(canceled) == 2
    assert _history(queued) == {(str(job.pk), "night-operator", "Canceled (admin action).") for job in canceled}


def _messages(page: Any) -> list[str]:
    return [str(message) for message in page.context["messages"]]


def _history(rows: list[Any]) -> set[tuple[str, str, str]]:
    return set(LogEntry.objects.filter(object_id__in=[str(row.pk) for row in rows])
               .values_list("object_id", "user__username", "change_message"))
