"""A client deleted (the admin's delete) while a worker moves one of its jobs on: the deletion
goes through, and leaves nothing of the client. The deletion reads what the client owns, then
deletes it, then the client: a job's transition that committed in between (its job.* event, its
final state) left rows the deletion had not read, and the deletion failed at commit on their
foreign keys, the client left in place."""
from __future__ import annotations

import pytest
from django.utils import timezone

from core.models import Client
from core.services import client_create, client_delete
from jobs import transitions
from jobs.models import Job, JobEvent
from tests.locks import meanwhile
from webhooks.models import Event

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = "api.tasks.hello_world"


def test_a_client_deleted_while_its_job_finishes_is_deleted_with_all_it_owns() -> None:
    # Given a client whose job runs (out of the session worker's sight: not published)
    client = client_create(name="deleted-while-running")
    job = Job.objects.create(owner=client, job_name=HELLO, dispatched_at=timezone.now(),
                             callback_url="http://127.0.0.1:9/hook")
    assert transitions.job_start(job_id=job.id) is not None

    # When the worker's step ends as the deletion starts deleting what it read (on a connection of
    # its own)
    with meanwhile(lambda: transitions.job_finish(job_id=job.id, status=Job.Status.SUCCESS, result={"ok": 1}),
                   at="DELETE") as finished:
        client_delete(client=client)

    # Then the client is gone, with its job, the job's events and its webhook's event
    assert not Client.objects.filter(pk=client.pk).exists()
    assert not Job.objects.filter(owner_id=client.pk).exists()
    assert not JobEvent.objects.filter(owner_id=client.pk).exists()
    assert not Event.objects.filter(owner_id=client.pk).exists()
    # And the worker's transition, which waited for the deletion, found its job gone and did nothing
    assert finished == [False]
