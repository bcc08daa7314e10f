"""Where the console's rows lead: the admin's Cancel on a job's page and Redeliver on a
delivery's page (and as actions on their lists) do what the client's own calls do."""
from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client as BrowserClient

from jobs.models import Job
from tests.console.seed import seed
from webhooks.models import Delivery

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator() -> BrowserClient:
    browser = BrowserClient()
    browser.force_login(User.objects.create_superuser("operator", "op@example.com", "pw"))
    return browser


def test_cancel_on_a_jobs_page_cancels_it(operator: BrowserClient) -> None:
    job = seed().oldest_pending

    response = operator.post(f"/admin/jobs/job/{job.pk}/actions/cancel/", follow=True)

    job.refresh_from_db()
    assert job.status == Job.Status.REVOKED and job.cancel_requested
    assert "Canceled 1 job(s)." in response.content.decode()


def test_cancel_on_the_list_leaves_final_jobs_as_they_are(operator: BrowserClient) -> None:
    seeded = seed()
    running, done = seeded.longest_running, seeded.failed[0]

    response = operator.post("/admin/jobs/job/", {"action": "cancel", "_selected_action": [running.pk, done.pk]},
                             follow=True)

    running.refresh_from_db()
    done.refresh_from_db()
    assert running.cancel_requested and running.status == Job.Status.STARTED  # stops within a step
    assert done.status == Job.Status.FAILURE and not done.cancel_requested
    assert "1 job(s) were final already" in response.content.decode()


def test_redeliver_on_a_deliverys_page_sends_its_event_again(operator: BrowserClient) -> None:
    delivery = seed().failing_delivery
    assert delivery is not None

    response = operator.post(f"/admin/webhooks/delivery/{delivery.pk}/actions/redeliver/", follow=True)

    again = Delivery.objects.filter(event=delivery.event, redelivery=True).get()
    assert again.state == Delivery.State.PENDING and again.url == delivery.url
    assert "Redelivering 1 event(s)." in response.content.decode()


def test_the_buttons_take_no_get_and_no_one_without_the_permission(operator: BrowserClient, db: Any) -> None:
    seeded = seed()
    clerk = BrowserClient()
    clerk.force_login(User.objects.create_user("clerk", is_staff=True))

    assert operator.get(f"/admin/jobs/job/{seeded.oldest_pending.pk}/actions/cancel/").status_code == 405
    assert clerk.post(f"/admin/jobs/job/{seeded.oldest_pending.pk}/actions/cancel/").status_code == 403
    seeded.oldest_pending.refresh_from_db()
    assert seeded.oldest_pending.status == Job.Status.PENDING
