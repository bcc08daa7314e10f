"""A job that a worker finishes while its client is being deleted by batches (the client_delete
command, minutes for a big client; jobs go last): its final event goes to no receiver. Its
callback_url stayed, so the event's delivery was recorded and sent, after the operator decided
to delete the client."""
from __future__ import annotations

import pytest

from core.models import Client
from core.services import client_create, client_delete_in_batches
from jobs.models import Job, JobResult
from jobs.transitions import job_finish
from webhooks.models import Delivery, Event

pytestmark = pytest.mark.django_db

HELLO = "api.tasks.hello_world"
RECEIVER = "http://127.0.0.1:9/hooks"


def test_a_job_finished_while_its_client_is_deleted_records_no_delivery() -> None:
    # Given a client's running job with a callback_url, and a finished one's result (deleted
    # before the jobs), and another client's running job
    owner = client_create(name="leaving")
    other = client_create(name="staying")
    running = Job.objects.create(owner=owner, job_name=HELLO, status=Job.Status.STARTED, callback_url=RECEIVER)
    finished = Job.objects.create(owner=owner, job_name=HELLO, status=Job.Status.SUCCESS)
    JobResult.objects.create(owner=owner, job=finished, task_name=HELLO, result="hi")
    elsewhere = Job.objects.create(owner=other, job_name=HELLO, status=Job.Status.STARTED, callback_url=RECEIVER)
    recorded: list[tuple[int, int]] = []

    def a_worker_finishes_it_meanwhile(kind: str, deleted: int) -> None:
        if not recorded:
            assert job_finish(job_id=running.pk, status=Job.Status.SUCCESS, result="hi", publish_waiting=False)
            recorded.append((Event.objects.filter(subject_id=running.pk).count(),
                             Delivery.objects.filter(subject_id=running.pk).count()))

    # When the operator deletes the client, and a worker finishes its job during the deletion
    client_delete_in_batches(client=owner, batch_rows=1, progress=a_worker_finishes_it_meanwhile)

    # Then the job's end recorded no delivery (nor an event, having no receiver), and the client
    # is gone; the other client's job still has its callback_url, and its end is delivered
    assert recorded == [(0, 0)]
    assert not Client.objects.filter(pk=owner.pk).exists()
    assert job_finish(job_id=elsewhere.pk, status=Job.Status.SUCCESS, result="hi", publish_waiting=False)
    assert Delivery.objects.filter(subject_id=elsewhere.pk, url=RECEIVER).count() == 1
