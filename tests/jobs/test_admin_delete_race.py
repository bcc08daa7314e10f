"""A job deleted in the admin while a worker moves it on: the deletion goes through. It reads
the job's events, deletes them, then the job: a transition that committed in between (its
job.* event, its result) left rows it had not read, and the deletion failed at commit on their
foreign keys (the admin's 500, the job left in place)."""
from __future__ import annotations

import pytest
from django.test import Client as DjangoClient
from django.urls import reverse
from django.utils import timezone

from core.services import client_create
from jobs import transitions
from jobs.models import Job, JobEvent
from tests.locks import meanwhile

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = "api.tasks.hello_world"


@pytest.mark.parametrize("how", ["page", "selected"])
def test_a_job_deleted_in_the_admin_while_it_finishes_is_deleted(admin_client: DjangoClient, how: str) -> None:
    # Given a running job (out of the session worker's sight: not published)
    owner = client_create(name=f"admin-delete-race-{how}")
    job = Job.objects.create(owner=owner, job_name=HELLO, dispatched_at=timezone.now())
    assert transitions.job_start(job_id=job.id) is not None

    # When an operator deletes it in the admin (its page's Delete, or the list's action), and the
    # worker's step ends as the deletion is about to delete the job, its events deleted (on a
    # connection of its own)
    def finish() -> bool:
        return transitions.job_finish(job_id=job.id, status=Job.Status.SUCCESS, result={"ok": 1})

    with meanwhile(finish, at='DELETE FROM "jobs_job"') as finished:
        if how == "page":
            response = admin_client.post(reverse("admin:jobs_job_delete", args=[job.pk]), {"post": "yes"})
        else:
            response = admin_client.post(reverse("admin:jobs_job_changelist"), {
                "action": "delete_selected", "post": "yes", "_selected_action": [str(job.pk)],
            })

    # Then the job is gone, with its events, and the worker's transition found nothing to move
    assert response.status_code == 302
    assert not Job.objects.filter(pk=job.pk).exists()
    assert not JobEvent.objects.filter(job_id=job.pk).exists()
    assert finished == [False]
