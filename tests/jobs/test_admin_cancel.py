"""A job's page's Cancel, as an operator presses it: what it reads of the job, and who may."""
from __future__ import annotations

import uuid

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client as HttpClient
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import jobs.admin
from core.models import Client
from core.services import client_create
from jobs.models import Job

pytestmark = pytest.mark.django_db


def test_cancel_on_a_jobs_page_reads_it_whole_only_to_lock_it() -> None:
    # Given a queued job with a large payload
    owner = client_create(name="acme")
    big = {"blob": "x" * 200_000}
    job = Job.objects.create(owner=owner, job_name="api.tasks.hello_world", payload=big, metadata={"team": "a"},
                             dispatched_at=timezone.now())
    http = HttpClient()
    http.force_login(User.objects.create_superuser("admin", "admin@example.com", "pw"))

    # When an operator cancels it from its page
    with CaptureQueriesContext(connection) as queries:
        answer = http.post(f"/admin/jobs/job/{job.pk}/actions/cancel/")

    # Then it is canceled, read whole by the cancel's lock alone (its job.canceled event carries
    # the whole job): not by the page (django-object-actions' view read its row whole to hand it
    # to the action) nor by the action's selection, which names the job and its client alone
    assert answer.status_code == 302
    assert answer["Location"] == f"/admin/jobs/job/{job.pk}/change/"
    job.refresh_from_db()
    assert job.status == Job.Status.REVOKED
    whole = [q["sql"] for q in queries if q["sql"].startswith("SELECT") and '"jobs_job"."payload"' in q["sql"]]
    assert len(whole) == 1 and "FOR UPDATE" in whole[0], [sql[:120] for sql in whole]


def test_cancel_on_a_jobs_page_is_a_post_for_a_job_it_may_change() -> None:
    # Given a queued job, an operator who may only view jobs, and one who may change them
    job = Job.objects.create(owner=client_create(name="acme"), job_name="api.tasks.hello_world",
                             dispatched_at=timezone.now())
    viewer = User.objects.create_user("viewer", "viewer@example.com", "pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_job"))
    viewing, changing = HttpClient(), HttpClient()
    viewing.force_login(viewer)
    changing.force_login(User.objects.create_superuser("admin", "admin@example.com", "pw"))
    cancel = f"/admin/jobs/job/{job.pk}/actions/cancel/"

    # Then its page offers the button to the one who may change it alone (the viewer's showed it,
    # and pressing it answered 403), a GET or a viewer's POST cancels nothing, nor an id not a job's
    assert f'action="{cancel}"' in changing.get(f"/admin/jobs/job/{job.pk}/change/").content.decode()
    viewed = viewing.get(f"/admin/jobs/job/{job.pk}/change/")
    assert viewed.status_code == 200 and cancel not in viewed.content.decode()
    assert changing.get(cancel).status_code == 405
    assert viewing.post(cancel).status_code == 403
    assert changing.post("/admin/jobs/job/not-a-job/actions/cancel/").status_code == 404
    job.refresh_from_db()
    assert job.status == Job.Status.PENDING
    # And the operator who may change it cancels it
    assert "Canceled 1 job(s)." in changing.post(cancel, follow=True).content.decode()
    job.refresh_from_db()
    assert job.status == Job.Status.REVOKED


def test_a_job_deleted_after_the_list_was_read_is_left_out_of_its_cancel(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given two queued jobs on the list, the second deleted (a prune, its client) after the
    # operator's selection was read, before its cancel locks it
    owner = client_create(name="acme")
    first, second = (Job.objects.create(owner=owner, job_name="api.tasks.hello_world", dispatched_at=timezone.now())
                     for _ in range(2))
    cancel = jobs.admin.job_cancel

    def deleted_first(*, owner: Client, job_id: uuid.UUID) -> Job:
        if job_id == second.pk:
            Job.objects.filter(pk=second.pk).delete()
        return cancel(owner=owner, job_id=job_id)

    monkeypatch.setattr(jobs.admin, "job_cancel", deleted_first)
    http = HttpClient()
    http.force_login(User.objects.create_superuser("admin", "admin@example.com", "pw"))

    # When the operator cancels both from the list
    answer = http.post("/admin/jobs/job/", {"action": "cancel", "_selected_action": [first.pk, second.pk]},
                       follow=True)

    # Then the first is canceled and said so, the second said gone, where the action was a 500
    assert answer.status_code == 200
    page = answer.content.decode()
    assert "Canceled 1 job(s)." in page and "1 jobs deleted since the list was read: left out." in page
    first.refresh_from_db()
    assert first.status == Job.Status.REVOKED
    assert LogEntry.objects.filter(object_id=str(first.pk)).count() == 1
