"""The periodic rules that act on jobs row by row, the deadline rule (jobs.enforce_deadlines) and
the abandoned-job rule (jobs.fail_abandoned), run one at a time: a run sent while another is under
way (beat sends each every 5 s, and a run slowed by rows that raise lasts 5-10 s a look) does
nothing. Before, it read the same rows and acted on them beside the first, on a second thread of
the deliveries worker (whose threads have no time limit), one more every 5 s while runs stayed
slow. What keeps them apart (a leased slot in Redis, core/housekeeping.py) never keeps them out
for good: with Redis unreachable every run runs."""
from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone
from redis.backoff import NoBackoff
from redis.retry import Retry

from core import housekeeping
from core.services import client_create
from core.slots import Slots
from jobs import abandoned, deadlines, tasks
from jobs.models import Job
from jobs.registry import job_type_get
from tests.conftest import free_port

pytestmark = pytest.mark.django_db(transaction=True)

CHECKLIST = "api.tasks.generate_checklist_from_guidelines"


def _past_deadline(count: int) -> list[Job]:
    owner = client_create(name="deadlines-alone")
    now = timezone.now()
    return [Job.objects.create(owner=owner, job_name=CHECKLIST, deadline=now - timedelta(seconds=1),
                               dispatched_at=now) for _ in range(count)]


def _abandoned(count: int) -> list[Job]:
    owner = client_create(name="abandoned-alone")
    job_type = job_type_get(CHECKLIST)
    limit = settings.CELERY_BROKER_VISIBILITY_TIMEOUT_SECONDS + len(job_type.steps) * job_type.time_limit_seconds + 60
    started = timezone.now() - timedelta(seconds=limit + 60)
    return [Job.objects.create(owner=owner, job_name=CHECKLIST, status=Job.Status.STARTED, started_at=started,
                               dispatched_at=started) for _ in range(count)]


# Each rule: its task, the jobs it acts on, the module and name of its act on one row (held in a
# test mid-run), and the state a job is left in once acted on.
RULES = {
    "deadlines": (tasks.jobs_enforce_deadlines, _past_deadline, deadlines, "job_cancel_past_deadline", "REVOKED"),
    "abandoned": (tasks.jobs_fail_abandoned, _abandoned, abandoned, "_worker_lost", "FAILURE"),
}


@pytest.fixture(autouse=True)
def _runs_of_this_test_alone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The suite's shared worker and beat (started by tests in tests/console and tests/core) send
    each rule every second, on this database and through these same slots, with the real leases:
    a run of theirs would take the slot a test frees, or act on the jobs it made first. For the
    whole test both rules' real slots are held, with a lease past the test's (their runs find
    them held and do nothing), and this process's runs take slots of their own."""
    shared, held = housekeeping.slots, []
    try:
        for task, *_ in RULES.values():
            # A run of theirs under way ends in milliseconds; both waits within the test's timeout
            # (a slot taken before it fired is let go below, not kept for its lease).
            held.append(shared.acquire(task.name, limit=1, lease_seconds=180, wait_seconds=50))
            assert held[-1] is not None
        monkeypatch.setattr(housekeeping, "slots", Slots(housekeeping._redis, prefix=f"test-rules-{uuid.uuid4().hex}:"))
        yield
    finally:
        for slot in held:
            if slot is not None:
                slot.release()


def _statuses(jobs: list[Job]) -> list[str]:
    return [Job.objects.get(pk=job.pk).status for job in jobs]


@contextlib.contextmanager
def _a_run_held_on_a_row(rule: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """A run of `rule` in a thread of its own (another worker's), held on its first row until the
    block ends (slow, or hung); yields once it is there what it returned, under "first", once
    joined as the block ends."""
    task, _, module, act_name, _ = RULES[rule]
    act: Callable[..., int] = getattr(module, act_name)
    on_a_row, go_on = threading.Event(), threading.Event()

    def held(*args: Any, **kwargs: Any) -> int:
        if threading.current_thread().name == "first":
            on_a_row.set()
            go_on.wait(30)
        return act(*args, **kwargs)

    monkeypatch.setattr(module, act_name, held)
    ran: dict[str, int] = {}

    def first_run() -> None:
        try:
            ran["first"] = task()
        finally:
            connection.close()

    first = threading.Thread(target=first_run, name="first")
    first.start()
    try:
        assert on_a_row.wait(30)
        yield ran
    finally:
        go_on.set()
        first.join(30)


@pytest.mark.parametrize("rule", RULES)
def test_a_run_sent_while_another_is_under_way_does_nothing(rule: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given four jobs due, and a run held on its first row (slow: a row whose act raises costs
    # 10-20 ms, 500 of them a look)
    task, make, _, _, acted = RULES[rule]
    jobs = make(4)
    with _a_run_held_on_a_row(rule, monkeypatch) as ran:
        # When beat's next run comes meanwhile
        ran["second"] = task()

    # Then it did nothing, and the run under way acted on every job: one run's work, on one
    # thread (before, the second acted on all four beside the first, which found them done)
    assert ran == {"first": 4, "second": 0}
    assert _statuses(jobs) == [acted] * 4


@pytest.mark.parametrize("rule", RULES)
def test_a_run_finding_the_slot_held_does_nothing_and_the_next_one_acts(rule: str) -> None:
    # Given jobs due, and the rule's slot held (a run under way on another worker)
    task, make, _, _, acted = RULES[rule]
    jobs = make(2)
    under_way = housekeeping.slots.acquire(task.name, limit=1, lease_seconds=60)
    assert under_way is not None

    # When a run comes while it is held, and one after it is let go
    try:
        within = task()
    finally:
        under_way.release()
    after = task()

    # Then the first left the jobs as they were; the next acted on them
    assert within == 0
    assert after == 2
    assert _statuses(jobs) == [acted] * 2


@pytest.mark.parametrize("rule", RULES)
def test_with_redis_unreachable_every_run_acts(rule: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given Redis unreachable: nothing to keep the runs apart
    unreachable = redis.Redis(port=free_port(), socket_connect_timeout=0.2, socket_timeout=0.2,
                              retry=Retry(NoBackoff(), 0))  # refused at once, not after redis-py's retries
    monkeypatch.setattr(housekeeping, "slots", Slots(lambda: unreachable))
    task, make, _, _, acted = RULES[rule]
    jobs = make(2)

    # When a run comes while another is under way (its slot taken, as far as it could be)
    with housekeeping.run_alone(task.name, lease=60) as alone:
        ran = task()

    # Then it acted, as before the runs were kept apart: a rule never stops for want of Redis
    assert alone
    assert ran == 2
    assert _statuses(jobs) == [acted] * 2


@pytest.mark.parametrize("rule", RULES)
def test_a_run_that_never_ends_is_in_the_way_for_its_rows_lease_only(rule: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a run that never ends (its worker hung, or killed without its slot let go), with a
    # short time a row: the deadline rule's 500 rows 0.1 s, the abandoned-job rule's 3,000 0.6 s
    task, make, _, _, acted = RULES[rule]
    monkeypatch.setattr(housekeeping, "ROW_SECONDS", 0.0002)
    jobs = make(2)
    with _a_run_held_on_a_row(rule, monkeypatch):
        # When a run comes once the stuck one's lease is out
        time.sleep(0.8)
        after = task()

    # Then it acted on the jobs: the rule is kept out for the lease its rows bound, not for good
    assert after == 2
    assert _statuses(jobs) == [acted] * 2
