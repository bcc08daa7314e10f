"""An admin action applies to ADMIN_ACTION_MAX_ROWS rows at most: "select all" across a list's
pages of more is refused whole, Django's delete too, and nothing changes."""
from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client as BrowserClient
from django.test.utils import CaptureQueriesContext

from core.admin_site import BoundedActionsAdmin
from core.models import Client
from core.services import client_create
from jobs.admin import JobAdmin
from jobs.models import Job
from webhooks.models import Delivery, Event

pytestmark = pytest.mark.django_db

REFUSED = "An action applies to 3 {rows} at most, and more are selected: nothing was changed."


@pytest.fixture
def operator(settings: Any) -> BrowserClient:
    settings.ADMIN_ACTION_MAX_ROWS = 3
    browser = BrowserClient()
    browser.force_login(User.objects.create_superuser("operator", "op@example.com", "pw"))
    return browser


@pytest.fixture
def owner() -> Client:
    return client_create(name="acme")


def pending_jobs(owner: Client, count: int) -> list[Job]:
    return [Job.objects.create(owner=owner, job_name="api.tasks.hello_world", status=Job.Status.PENDING)
            for _ in range(count)]


def failed_deliveries(owner: Client, count: int) -> list[Delivery]:
    deliveries = []
    for _ in range(count):
        event = Event.objects.create(owner=owner, subject_id=uuid.uuid4(), event_type="job.succeeded", body=b"{}")
        deliveries.append(Delivery.objects.create(event=event, owner=owner, subject_id=event.subject_id,
                                                  url="https://hooks.example/x", state=Delivery.State.FAILED))
    return deliveries


def select_all(browser: BrowserClient, changelist: str, action: str, one_row: Any) -> str:
    """The list's action on every row of every page: one box ticked, then "Select all"."""
    response = browser.post(changelist, {"action": action, "index": 0, "select_across": 1,
                                         "_selected_action": [one_row.pk]}, follow=True)
    assert response.status_code == 200
    return response.content.decode()


def canceled(jobs: list[Job]) -> int:
    return Job.objects.filter(pk__in=[job.pk for job in jobs], cancel_requested=True).count()


def test_cancel_across_more_jobs_than_the_bound_is_refused(operator: BrowserClient, owner: Client) -> None:
    jobs = pending_jobs(owner, 4)

    with CaptureQueriesContext(connection) as queries:
        refused = operator.post("/admin/jobs/job/", {"action": "cancel", "index": 0, "select_across": 1,
                                                     "_selected_action": [jobs[0].pk]})
    # (the next request clears the queries captured)
    reads = [q["sql"] for q in queries if 'FROM "jobs_job"' in q["sql"]]
    page = operator.get(refused["Location"]).content.decode()

    assert REFUSED.format(rows="jobs") in page and "Narrow the selection with the filters" in page
    assert canceled(jobs) == 0
    assert set(Job.objects.values_list("status", flat=True)) == {Job.Status.PENDING}
    # The selection was not loaded to be refused: beside the list's count, one key past the bound
    assert [sql for sql in reads if "COUNT(" not in sql] == ['SELECT "jobs_job"."id" AS "pk" FROM "jobs_job" LIMIT 4'], reads


def test_cancel_across_as_many_jobs_as_the_bound_applies(operator: BrowserClient, owner: Client) -> None:
    jobs = pending_jobs(owner, 3)

    page = select_all(operator, "/admin/jobs/job/", "cancel", jobs[0])

    assert "Canceled 3 job(s)." in page and "at most" not in page
    assert set(Job.objects.values_list("status", flat=True)) == {Job.Status.REVOKED}


def test_a_filtered_selection_within_the_bound_applies(operator: BrowserClient, owner: Client) -> None:
    # More jobs than the bound, but the filter leaves three: those are canceled, the others not
    jobs = pending_jobs(owner, 3)
    others = [Job.objects.create(owner=owner, job_name="api.tasks.long_running_task", status=Job.Status.PENDING)
              for _ in range(3)]

    page = select_all(operator, "/admin/jobs/job/?job_name__exact=api.tasks.hello_world", "cancel", jobs[0])

    assert "Canceled 3 job(s)." in page
    assert canceled(jobs) == 3 and canceled(others) == 0


def test_redeliver_is_bounded_too(operator: BrowserClient, owner: Client) -> None:
    deliveries = failed_deliveries(owner, 4)

    page = select_all(operator, "/admin/webhooks/delivery/", "redeliver", deliveries[0])

    assert REFUSED.format(rows="deliveries") in page
    assert not Delivery.objects.filter(redelivery=True).exists()


def test_delete_across_more_rows_than_the_bound_is_refused_at_both_steps(
    operator: BrowserClient, owner: Client,
) -> None:
    deliveries = failed_deliveries(owner, 4)

    # The confirmation page (which lists every row and what goes with it) is not shown
    page = select_all(operator, "/admin/webhooks/delivery/", "delete_selected", deliveries[0])
    assert REFUSED.format(rows="deliveries") in page and "Are you sure you want to delete" not in page

    # Nor does a confirmation posted for all of them delete any
    response = operator.post("/admin/webhooks/delivery/", {
        "action": "delete_selected", "post": "yes", "_selected_action": [d.pk for d in deliveries],
    }, follow=True)
    assert REFUSED.format(rows="deliveries") in response.content.decode()
    assert Delivery.objects.count() == 4


def test_delete_within_the_bound_asks_then_deletes(operator: BrowserClient, owner: Client) -> None:
    deliveries = failed_deliveries(owner, 3)

    page = select_all(operator, "/admin/webhooks/delivery/", "delete_selected", deliveries[0])
    assert "Are you sure you want to delete" in page

    response = operator.post("/admin/webhooks/delivery/", {
        "action": "delete_selected", "post": "yes", "_selected_action": [d.pk for d in deliveries],
    }, follow=True)
    assert "Successfully deleted 3 deliveries." in response.content.decode()
    assert not Delivery.objects.exists()


def test_delete_across_more_users_than_the_bound_is_refused(operator: BrowserClient) -> None:
    # The operator and three more: four users
    users = [User.objects.create_user(f"user{n}", password="pw") for n in range(3)]

    page = select_all(operator, "/admin/auth/user/", "delete_selected", users[0])

    assert REFUSED.format(rows="users") in page and "Are you sure you want to delete" not in page
    assert User.objects.count() == 4


def test_the_user_admin_replaced_lists_adds_and_deletes_users(operator: BrowserClient) -> None:
    # Its list, its add form (Django's two passwords), and a deletion within the bound
    assert "operator" in operator.get("/admin/auth/user/").content.decode()
    added = operator.post("/admin/auth/user/add/", {
        "username": "colleague", "usable_password": "true",
        "password1": "a-long-passphrase-1", "password2": "a-long-passphrase-1",
    })
    assert added.status_code == 302, added.content.decode()
    colleague = User.objects.get(username="colleague")
    assert colleague.check_password("a-long-passphrase-1")

    page = select_all(operator, "/admin/auth/user/?username=colleague", "delete_selected", colleague)
    assert "Are you sure you want to delete" in page
    deleted = operator.post("/admin/auth/user/", {
        "action": "delete_selected", "post": "yes", "_selected_action": [colleague.pk],
    }, follow=True)
    assert "Successfully deleted 1 user." in deleted.content.decode()
    assert list(User.objects.values_list("username", flat=True)) == ["operator"]


def test_a_bound_of_zero_bounds_nothing(operator: BrowserClient, owner: Client, settings: Any) -> None:
    settings.ADMIN_ACTION_MAX_ROWS = 0
    jobs = pending_jobs(owner, 4)

    page = select_all(operator, "/admin/jobs/job/", "cancel", jobs[0])

    assert "Canceled 4 job(s)." in page
    assert canceled(jobs) == 4


def test_every_model_admin_of_the_project_bounds_its_actions() -> None:
    # Every admin offers Django's delete_selected, so each one must be bounded: Django's user and
    # group admins, which the project replaces, too
    for label in ("auth", "core", "jobs", "webhooks", "console"):
        for model in apps.get_app_config(label).get_models():
            if admin.site.is_registered(model):
                assert isinstance(admin.site.get_model_admin(model), BoundedActionsAdmin), model


def test_a_list_offers_select_all_only_where_an_action_may_take_that_many(
    operator: BrowserClient, owner: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given lists of two jobs a page
    monkeypatch.setattr(JobAdmin, "list_per_page", 2)
    select_all_link = "Select all {count} jobs"
    pending_jobs(owner, 3)

    # When the list holds as many jobs as an action may take, it offers them all
    within = operator.get("/admin/jobs/job/").content.decode()
    assert select_all_link.format(count=3) in within

    # When it holds more, it offers no selection every action would refuse, and says why
    pending_jobs(owner, 1)
    past = operator.get("/admin/jobs/job/").content.decode()
    assert select_all_link.format(count=4) not in past
    assert "An action applies to 3 jobs at most: narrow the list with the filters (or a search)" in past
