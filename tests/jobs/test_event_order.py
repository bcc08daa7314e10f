"""An owner's events become visible in the order of their ids, so a stream that reads after the
last id it sent (`/api/events/`, a resume with Last-Event-ID) never skips one whose transaction
committed late."""
from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from django.db import connection, transaction
from django.utils import timezone

from core.services import client_create
from jobs import event_log
from jobs.models import Job

BODY = {"job_name": "api.tasks.hello_world"}


def in_thread(work: Callable[[], None]) -> threading.Thread:
    def run() -> None:
        try:
            work()
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.django_db(transaction=True)
def test_an_event_numbered_later_waits_for_the_owners_earlier_one_to_commit() -> None:
    # Given an owner's two jobs, claimed for dispatch as a submission leaves them: the suite's beat
    # sweeps committed jobs left unclaimed, and its worker's events would join the two below
    owner = client_create(name="order")
    first_job, second_job = (Job.objects.create(owner=owner, dispatched_at=timezone.now(), **BODY) for _ in range(2))
    first_recorded, first_may_commit = threading.Event(), threading.Event()

    def first() -> None:  # takes the lower id, then holds its transaction open
        with transaction.atomic():
            event_log.job_event_record(job=first_job, event_type="job.started")
            first_recorded.set()
            first_may_commit.wait(10)

    def second() -> None:
        with transaction.atomic():
            event_log.job_event_record(job=second_job, event_type="job.started")

    holder = in_thread(first)
    assert first_recorded.wait(10)
    later = in_thread(second)
    later.join(0.5)

    # What a stream reading now sends, and where it would resume
    sent = [event.pk for event in event_log.owner_events_after(owner_id=owner.id, after_id=0)]
    first_may_commit.set()
    holder.join(10)
    later.join(10)
    sent += [event.pk for event in event_log.owner_events_after(owner_id=owner.id, after_id=max(sent, default=0))]

    every = sorted(event_log.owner_events_after(owner_id=owner.id, after_id=0).values_list("pk", flat=True))
    assert len(every) == 2
    assert sent == every  # none skipped, none repeated
