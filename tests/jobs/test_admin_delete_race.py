"""A job deleted in the admin while a worker moves it on: the deletion goes through. It reads
the job's events, deletes them, then the job: a transition that committed in between (its
job.* event, its result) left rows it had not read, and the deletion failed at commit on their
foreign keys (the admin's 500, the job left in place)."""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import DatabaseError, connection
from django.test import Client as DjangoClient
from django.urls import reverse
from django.utils import timezone

from core.services import client_create
from jobs import transitions
from jobs.models import Job, JobEvent

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = "api.tasks.hello_world"


@pytest.mark.parametrize("how", ["page", "selected"])
def test_a_job_deleted_in_the_admin_while_it_finishes_is_deleted(admin_client: DjangoClient, how: str) -> None:
    # Given a running job (out of the session worker's sight: not published)
    owner = client_create(name=f"admin-delete-race-{how}")
    job = Job.objects.create(owner=owner, job_name=HELLO, dispatched_at=timezone.now())
    assert transitions.job_start(job_id=job.id) is not None
    finished: list[bool | BaseException] = []

    def finish() -> None:  # a worker's step ending, on a connection of its own
        try:
            finished.append(transitions.job_finish(job_id=job.id, status=Job.Status.SUCCESS, result={"ok": 1}))
        except DatabaseError as exc:
            finished.append(exc)
        finally:
            connection.close()

    worker = threading.Thread(target=finish)

    def finish_while_deleting(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.startswith('DELETE FROM "jobs_job"') and worker.ident is None:
            # When the worker's step ends as the deletion is about to delete the job, its events
            # deleted (the step may have to wait for the deletion: given a moment, not waited for)
            worker.start()
            worker.join(timeout=1)
        return execute(sql, params, many, context)

    # When an operator deletes it in the admin (its page's Delete, or the list's action)
    with connection.execute_wrapper(finish_while_deleting):
        if how == "page":
            response = admin_client.post(reverse("admin:jobs_job_delete", args=[job.pk]), {"post": "yes"})
        else:
            response = admin_client.post(reverse("admin:jobs_job_changelist"), {
                "action": "delete_selected", "post": "yes", "_selected_action": [str(job.pk)],
            })
    worker.join(timeout=30)

    # Then the job is gone, with its events, and the worker's transition found nothing to move
    assert response.status_code == 302
    assert not Job.objects.filter(pk=job.pk).exists()
    assert not JobEvent.objects.filter(job_id=job.pk).exists()
    assert finished == [False]
