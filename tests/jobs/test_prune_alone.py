"""The prunes run one at a time: a run sent while another is under way (beat's hourly one, while a
chain of runs works through a backlog; a second beat's) does nothing and queues nothing. Before,
it began a chain of its own beside the first: one more each hour the backlog lasted, each holding
a thread of the deliveries worker, which also sends the webhooks and runs the sweeper. What keeps
them apart (a slot in Redis, core/housekeeping.py) never keeps them out for good: a run that never
let go is in the way for its lease only (its message, redelivered, looks again once the lease is
out: the chain goes on), and with Redis unreachable every run runs."""
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.db import connection
from django.utils import timezone
from redis.backoff import NoBackoff
from redis.retry import Retry

from core import housekeeping
from core.models import Client
from core.services import client_create
from core.slots import Slots
from jobs import retention, tasks
from jobs.models import Job
from tests.conftest import free_port
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


def _job_backlog(monkeypatch: pytest.MonkeyPatch) -> None:
    """A backlog past retention larger than a run deletes (here 2 batches of 2): 12 jobs."""
    monkeypatch.setattr(retention, "PRUNE_BATCH_SIZE", 2)
    monkeypatch.setattr(retention, "PRUNE_MAX_BATCHES", 2)
    owner = client_create(name="pruned-alone")
    Job.objects.bulk_create([Job(owner=owner, job_name="api.tasks.hello_world", status=Job.Status.SUCCESS,
                                 created_at=OLD, finished_at=OLD) for _ in range(12)])


def _hold_jobs_batch(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[], None]], None]:
    def hold_in_batch(held: Callable[[], None]) -> None:
        counts_lock = retention.job_counts_lock
        monkeypatch.setattr(retention, "job_counts_lock", lambda **kwargs: (counts_lock(**kwargs), held()))

    return hold_in_batch


def test_a_jobs_prune_sent_while_another_runs_starts_no_second_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a backlog past retention larger than a run deletes
    _job_backlog(monkeypatch)

    # When beat's hourly run comes while a run of the chain is under way
    ran, queued = _beside_a_chains_run(tasks.jobs_prune, monkeypatch, _hold_jobs_batch(monkeypatch))

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


def test_a_run_that_never_lets_go_is_in_the_way_for_its_lease_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a run that took the slot and never lets it go (its worker hung or killed mid-run),
    # with a short lease: 4 kinds of 2 batches at 0.05 s, 0.4 s
    _job_backlog(monkeypatch)
    monkeypatch.setattr(housekeeping, "BATCH_SECONDS", 0.05)
    monkeypatch.setattr(tasks.jobs_prune, "apply_async", lambda *a, **k: None)
    dead = housekeeping.slots.acquire("jobs.prune", limit=1,
                                      lease_seconds=housekeeping.batches_lease_seconds(4 * retention.PRUNE_MAX_BATCHES))
    assert dead is not None
    try:
        # When a run comes within the lease, and one after it
        within = tasks.jobs_prune()
        time.sleep(0.6)
        after = tasks.jobs_prune()
    finally:
        dead.release()

    # Then the first did nothing, and the second pruned, as a run does (2 batches of 2)
    assert within.get("jobs", 0) == 0
    assert after["jobs"] == 4


def test_with_redis_unreachable_every_run_prunes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given Redis unreachable: nothing to keep the runs apart
    unreachable = redis.Redis(port=free_port(), socket_connect_timeout=0.2, socket_timeout=0.2,
                              retry=Retry(NoBackoff(), 0))  # refused at once, not after redis-py's retries
    monkeypatch.setattr(housekeeping, "slots", Slots(lambda: unreachable))
    _job_backlog(monkeypatch)
    queued: list[dict[str, Any]] = []
    monkeypatch.setattr(tasks.jobs_prune, "apply_async", lambda *a, **k: queued.append(k))

    # When a run comes while another is under way (its slot taken, as far as it could be)
    with housekeeping.run_alone("jobs.prune", lease=housekeeping.batches_lease_seconds(1)) as under_way:
        ran = tasks.jobs_prune()

    # Then it pruned and queued its next, as before the runs were kept apart: never a prune
    # stopped for want of Redis (with Redis, it would have done nothing beside the other)
    assert under_way
    assert ran["jobs"] == 4
    assert queued == [{}]
    assert Job.objects.count() == 8


@pytest.mark.parametrize(("task", "batches"), [
    (tasks.jobs_prune, lambda: 4 * retention.PRUNE_MAX_BATCHES),
    (webhook_tasks.webhooks_prune, lambda: outbox.PRUNE_MAX_BATCHES + 1),
], ids=["jobs", "webhooks"])
@pytest.mark.parametrize("redelivered", [True, False], ids=["redelivered", "first-delivery"])
def test_a_dead_runs_redelivered_message_looks_again_once_its_lease_is_out(
    task: Any, batches: Callable[[], int], redelivered: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a backlog past the cap, and the slot held by a run whose worker was killed (taken,
    # never let go)
    _job_backlog(monkeypatch)
    monkeypatch.setattr(outbox, "PRUNE_BATCH_SIZE", 2)
    monkeypatch.setattr(outbox, "PRUNE_MAX_BATCHES", 2)
    owner = client_create(name="pruned-after-a-dead-run")
    for _ in range(6):
        _delivered_event(owner)
    queued: list[dict[str, Any]] = []
    monkeypatch.setattr(task, "apply_async", lambda *a, **k: queued.append(k))
    dead = housekeeping.slots.acquire(task.name, limit=1, lease_seconds=housekeeping.batches_lease_seconds(batches()))
    assert dead is not None

    # When the run's message comes back (redelivered, as acks_late does on a worker lost), or
    # another run's comes for the first time (beat's)
    task.push_request(id=str(uuid.uuid4()), args=(), kwargs={}, called_directly=False, is_eager=False,
                      delivery_info={"redelivered": redelivered})
    try:
        ran = task.run()
    finally:
        task.pop_request()
        dead.release()

    # Then neither pruned; the redelivered one queued a run for once the dead run's lease is out,
    # which carries the chain on; beat's queued nothing (the run under way queues the next)
    assert ran == {}
    assert Job.objects.count() == 12 and Event.objects.count() == 6
    assert queued == ([{"countdown": housekeeping.batches_lease_seconds(batches())}] if redelivered else [])
