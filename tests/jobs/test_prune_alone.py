"""The prunes run one at a time: a run sent while another is under way (beat's hourly one, while a
chain of runs works through a backlog; a second beat's) does nothing and queues nothing. Before,
it began a chain of its own beside the first: one more each hour the backlog lasted, each holding
a thread of the deliveries worker, which also sends the webhooks and runs the sweeper."""
from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from core.models import Client
from core.services import client_create
from jobs import retention, tasks
from jobs.models import Job
from webhooks import outbox
from webhooks import tasks as webhook_tasks
from webhooks.models import Delivery, Event

pytestmark = pytest.mark.django_db(transaction=True)

OLD = timezone.now() - timedelta(days=400)


def _beside_a_chains_run(task: Any, monkeypatch: pytest.MonkeyPatch,
                         hold_in_batch: Callable[[Callable[[], None]], None]) -> tuple[dict[str, Any], list[str]]:
    """Run `task` as a chain's run, held in the middle of a batch (on a connection of its own,
    by `hold_in_batch`, given what to call there), and meanwhile as beat's run; what each
    returned, and which of them queued a next run."""
    queued: list[str] = []
    monkeypatch.setattr(task, "apply_async", lambda *a, **k: queued.append(threading.current_thread().name))
    in_batch, go_on = threading.Event(), threading.Event()

    def held() -> None:
        if threading.current_thread().name == "chain":
            in_batch.set()
            go_on.wait(30)

    hold_in_batch(held)
    ran: dict[str, Any] = {}

    def chain_run() -> None:
        try:
            ran["chain"] = task()
        finally:
            connection.close()

    chain = threading.Thread(target=chain_run, name="chain")
    chain.start()
    try:
        assert in_batch.wait(30)
        ran["beat"] = task()
    finally:
        go_on.set()
        chain.join(30)
    return ran, queued


def test_a_jobs_prune_sent_while_another_runs_starts_no_second_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a backlog past retention larger than a run deletes (here 2 batches of 2)
    monkeypatch.setattr(retention, "PRUNE_BATCH_SIZE", 2)
    monkeypatch.setattr(retention, "PRUNE_MAX_BATCHES", 2)
    owner = client_create(name="pruned-alone")
    Job.objects.bulk_create([Job(owner=owner, job_name="api.tasks.hello_world", status=Job.Status.SUCCESS,
                                 created_at=OLD, finished_at=OLD) for _ in range(12)])

    def hold_in_batch(held: Callable[[], None]) -> None:
        counts_lock = retention.job_counts_lock
        monkeypatch.setattr(retention, "job_counts_lock", lambda **kwargs: (counts_lock(**kwargs), held()))

    # When beat's hourly run comes while a run of the chain is under way
    ran, queued = _beside_a_chains_run(tasks.jobs_prune, monkeypatch, hold_in_batch)

    # Then it deleted nothing and queued nothing; the chain's run went on and queued its next:
    # one chain, not two
    assert ran["beat"].get("jobs", 0) == 0
    assert ran["chain"]["jobs"] == 4
    assert queued == ["chain"]
    assert Job.objects.count() == 8


def _delivered_event(owner: Client) -> None:
    event = Event.objects.create(owner=owner, subject_id=uuid.uuid4(), event_type="job.succeeded", body=b"{}",
                                 created_at=OLD)
    Delivery.objects.create(event=event, owner=owner, subject_id=event.subject_id, url="https://hooks.example.com/",
                            state=Delivery.State.SUCCEEDED, created_at=OLD)


def test_a_webhooks_prune_sent_while_another_runs_starts_no_second_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox, "PRUNE_BATCH_SIZE", 2)
    monkeypatch.setattr(outbox, "PRUNE_MAX_BATCHES", 2)
    owner = client_create(name="pruned-alone")
    for _ in range(12):
        _delivered_event(owner)

    def hold_in_batch(held: Callable[[], None]) -> None:
        delete = outbox.delete_in_batches
        monkeypatch.setattr(outbox, "delete_in_batches",
                            lambda queryset, **kwargs: delete(queryset, also_lock=lambda ids: held(), **kwargs))

    ran, queued = _beside_a_chains_run(webhook_tasks.webhooks_prune, monkeypatch, hold_in_batch)

    assert ran["beat"].get("events", 0) == 0
    assert ran["chain"]["events"] == 4
    assert queued == ["chain"]
    assert Event.objects.count() == 8
