"""Two deletions of jobs of the same owners at once (an operator's bulk deletion in the admin, a
batch of the prune): each locks the owners' count rows in owner order, in each statement's
triggers and before the deletion's first statement, so neither holds a row the other waits for
(a deadlock, PostgreSQL aborting one)."""
from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from core.models import Client
from jobs import idempotency, retention, sql, submission
from jobs.models import IdempotencyKey, Job, JobCounts, JobResult
from jobs.submission import SubmissionRequest
from tests.locks import meanwhile, rows_held

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = "api.tasks.hello_world"


def _in_thread(work: Callable[[], None], failures: list[DatabaseError]) -> threading.Thread:
    """`work` started in a thread on a connection of its own; a DatabaseError it raises (a deadlock
    PostgreSQL broke) is kept in `failures`."""
    def run() -> None:
        try:
            work()
        except DatabaseError as exc:
            failures.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _held_then_waited_on(held: str, first: Callable[[], None], second: Callable[[], None]) -> list[DatabaseError]:
    """`first` run as another transaction holds the rows `held` selects, `second` once `first` waits
    for them, and the rows let go once `second` waits in turn on `first`. The DatabaseErrors they
    raised."""
    failures: list[DatabaseError] = []
    with rows_held(held) as blocked:
        threads = [_in_thread(first, failures)]
        blocked(1)
        threads.append(_in_thread(second, failures))
        blocked(2)
    for thread in threads:
        thread.join()
    return failures


def _counts(owner: Client) -> tuple[int, int, int, int]:
    counts = JobCounts.objects.get(owner=owner)
    return counts.unfinished, counts.running, counts.result_bytes, counts.job_bytes


def test_two_bulk_deletions_of_jobs_of_the_same_owners_both_succeed() -> None:
    # Given three clients x < y < w (by id) with queued jobs (claimed for dispatch as a submission
    # leaves them: the suite's beat sweeps committed jobs left unclaimed, and its worker would run
    # them beside the deletions), the first deletion's jobs deleted (by id) y's, w's, then x's,
    # the second's x's, then y's
    x, y, w = (Client.objects.create(id=uuid.UUID(int=n), name=f"owner-{n}") for n in (1, 2, 3))
    owners_of_jobs = [y, w, x, x, y]
    Job.objects.bulk_create([Job(id=uuid.UUID(int=n), owner=owner, job_name=HELLO, payload={"n": n},
                                 dispatched_at=timezone.now())
                             for n, owner in enumerate(owners_of_jobs, start=1)])
    first, second = [uuid.UUID(int=n) for n in (1, 2, 3)], [uuid.UUID(int=n) for n in (4, 5)]

    # When the first deletion is held at w's count row (by another transaction) and the second
    # waits in turn on the first, and then w's row is let go
    failures = _held_then_waited_on(f"SELECT 1 FROM jobs_jobcounts WHERE owner_id = '{w.pk}' FOR UPDATE",
                                    lambda: retention.jobs_delete(job_ids=first),
                                    lambda: retention.jobs_delete(job_ids=second))

    # Then both deletions succeeded (before, the first held y's row and waited for x's, which the
    # second held while it waited for y's: PostgreSQL aborted one, the admin's 500), and each
    # owner's counts are those of its rows
    assert failures == []
    assert not Job.objects.exists()
    for owner in (x, y, w):
        assert _counts(owner) == sql.owner_counts_counted(owner.pk) == (0, 0, 0, 0)


def test_a_prune_batch_and_a_bulk_deletion_of_jobs_of_the_same_owners_both_succeed() -> None:
    # Given four clients a < b < c < d (by id) with finished jobs: the prune's batch deleting a
    # hundred of c's, a hundred of d's and one of b's, a statement each (Django deletes a hundred
    # a statement, by id from the last); the operator deleting a job of b's and one of c's,
    # finished since
    a, b, c, d = (Client.objects.create(id=uuid.UUID(int=n), name=f"owner-{n}") for n in (1, 2, 3, 4))
    long_ago, now = timezone.now() - timedelta(days=400), timezone.now()
    pruned = [(b, long_ago)] + [(d, long_ago)] * 100 + [(c, long_ago)] * 100
    Job.objects.bulk_create([Job(id=uuid.UUID(int=n), owner=owner, job_name=HELLO, payload={"n": n},
                                 status=Job.Status.SUCCESS, finished_at=finished)
                             for n, (owner, finished) in enumerate([*pruned, (b, now), (c, now)], start=1)])
    selected = [uuid.UUID(int=n) for n in (len(pruned) + 1, len(pruned) + 2)]

    # When the prune's batch is held at d's count row (by another transaction) and the operator's
    # deletion waits in turn on the prune, and then d's row is let go
    failures = _held_then_waited_on(
        f"SELECT 1 FROM jobs_jobcounts WHERE owner_id = '{d.pk}' FOR UPDATE",
        lambda: retention.jobs_finished_prune(older_than=now - timedelta(days=30), max_batches=1),
        lambda: retention.jobs_delete(job_ids=selected),
    )

    # Then both succeeded (before, the batch held c's row from its first statement and waited for
    # b's in its third, which the operator's deletion held while it waited for c's: PostgreSQL
    # aborted one), and each owner's counts are those of its rows
    assert failures == []
    assert not Job.objects.exists()
    for owner in (a, b, c, d):
        assert _counts(owner) == sql.owner_counts_counted(owner.pk) == (0, 0, 0, 0)


def _deleted_jobs_counted(jobs: type[Job] = Job) -> tuple[int, int, int, int]:
    """A new owner's counts once one statement deleted one of each of its queued, running and
    finished jobs (two of each), held to what its rows give; `jobs`, the jobs table's model as the
    migrations applied left it."""
    owner = Client.objects.create(name=f"owner-{uuid.uuid4()}")
    jobs.objects.bulk_create([jobs(owner_id=owner.pk, job_name=HELLO, payload={"n": n}, status=status)
                              for status in (Job.Status.PENDING, Job.Status.STARTED, Job.Status.SUCCESS)
                              for n in range(2)])
    jobs.objects.filter(owner_id=owner.pk, payload__n=0).delete()
    assert _counts(owner) == sql.owner_counts_counted(owner.pk)
    return _counts(owner)


def test_the_migration_undone_and_made_again_keeps_the_counts_of_deleted_jobs() -> None:
    # Given the migration undone (jobs 0024's triggers back), then made again
    call_command("migrate", "jobs", "0024", verbosity=0)
    try:
        # Its rows written as 0024 left the table (without the later columns)
        state = MigrationExecutor(connection).loader.project_state(("jobs", "0024_jobcounts_job_bytes"))
        undone = _deleted_jobs_counted(state.apps.get_model("jobs", "Job"))
    finally:
        call_command("migrate", verbosity=0)

    # Then a deletion's counts are those of the rows either way
    assert undone == _deleted_jobs_counted() == (2, 1, 0, 3 * len('{"n": 1}{}'))  # payload and metadata


def _expired_key() -> tuple[Client, datetime]:
    """A new client's finished job of 400 days ago, with the Idempotency-Key `k` that made it
    (as old): the client, and now."""
    owner = Client.objects.create(name=f"owner-{uuid.uuid4()}")
    long_ago, now = timezone.now() - timedelta(days=400), timezone.now()
    job = Job.objects.create(owner=owner, job_name=HELLO, status=Job.Status.SUCCESS, finished_at=long_ago)
    IdempotencyKey.objects.create(owner=owner, key="k", job=job, created_at=long_ago)
    return owner, now

def test_a_prune_batch_and_a_submission_freeing_its_jobs_expired_key_both_succeed() -> None:
    # Given a client's finished job past its retention, with the Idempotency-Key that made it,
    # past its TTL and not yet pruned
    owner, now = _expired_key()

    # When the prune's batch starts as the client's repeat of the key, having freed it, counts its
    # new job
    with meanwhile(lambda: retention.jobs_finished_prune(older_than=now - timedelta(days=30)),
                   at=f"INSERT INTO {Job._meta.db_table}") as pruned:
        new, created = submission.job_submit(owner=owner, request=SubmissionRequest(job_name=HELLO),
                                             idempotency_key="k")

    # Then both succeeded (before, the batch held the client's count row and waited for the key,
    # which the submission held while it waited for the count row: PostgreSQL aborted one), the
    # new job under the key
    assert pruned == [1]
    assert created and IdempotencyKey.objects.get(owner=owner, key="k").job_id == new.pk
    assert _counts(owner) == sql.owner_counts_counted(owner.pk)


def test_a_prune_of_jobs_and_a_prune_of_results_of_the_same_owner_both_succeed() -> None:
    # Given a client's finished job and its persisted result, both past their retention (an
    # operator keeping them for as long, two prune runs at once: one that stopped at its cap
    # queues the next)
    owner = Client.objects.create(name=f"owner-{uuid.uuid4()}")
    long_ago, now = timezone.now() - timedelta(days=400), timezone.now()
    job = Job.objects.create(owner=owner, job_name=HELLO, status=Job.Status.SUCCESS, finished_at=long_ago)
    JobResult.objects.create(owner=owner, job=job, task_name=HELLO, result={"n": 1}, created_at=long_ago)

    # When the results' prune starts as the jobs' prune lets go of the result (its job deleted)
    with meanwhile(lambda: retention.job_results_prune(older_than=now - timedelta(days=30)),
                   at=f'UPDATE "{JobResult._meta.db_table}"') as results_pruned:
        jobs_pruned = retention.jobs_finished_prune(older_than=now - timedelta(days=30))

    # Then both succeeded (before, the jobs' prune held the count row and waited for the result,
    # which the results' prune held while it waited for the count row: PostgreSQL aborted one),
    # the result, held by the jobs' prune, left to the next run of the results' prune
    assert (jobs_pruned, results_pruned) == (1, [0])
    assert retention.job_results_prune(older_than=now - timedelta(days=30)) == 1
    assert _counts(owner) == sql.owner_counts_counted(owner.pk) == (0, 0, 0, 0)


def test_a_prune_of_results_and_a_deletion_of_their_job_both_succeed_whatever_order_the_table_holds_them_in() -> None:
    # Given a client's finished job and two persisted results of it, past their retention, the
    # table holding the later id first (ids in the order a scan meets them need not be id order:
    # a row updated or written into freed space moves)
    owner = Client.objects.create(name=f"owner-{uuid.uuid4()}")
    long_ago, now = timezone.now() - timedelta(days=400), timezone.now()
    job = Job.objects.create(owner=owner, job_name=HELLO, status=Job.Status.SUCCESS, finished_at=long_ago)
    later = JobResult.objects.create(id=10**12 + 2, owner=owner, job=job, task_name=HELLO, result={"n": 2},
                                     created_at=long_ago)
    JobResult.objects.create(id=10**12 + 1, owner=owner, job=job, task_name=HELLO, result={"n": 1}, created_at=long_ago)
    table = JobResult._meta.db_table
    failures: list[DatabaseError] = []

    # When the results' prune meets the later result held (by a worker's transaction), an
    # operator deletes the job meanwhile, and the later result is then let go
    with rows_held(f'SELECT 1 FROM "{table}" WHERE id = {later.pk} FOR UPDATE') as blocked:
        pruning = _in_thread(lambda: retention.job_results_prune(older_than=now - timedelta(days=30)), failures)
        pruning.join(timeout=1)
        deleting = _in_thread(lambda: retention.jobs_delete(job_ids=[job.pk]), failures)
        blocked(1 + pruning.is_alive())
    pruning.join(timeout=30)
    deleting.join(timeout=30)

    # Then both succeeded (before, the prune held the later result and waited for the earlier,
    # which the deletion, locking them by id, held while it waited for the later: PostgreSQL
    # aborted one), and the counts are the rows' own
    assert failures == []
    assert not Job.objects.filter(pk=job.pk).exists()
    assert _counts(owner) == sql.owner_counts_counted(owner.pk)


def test_a_prune_of_keys_and_a_submission_freeing_the_same_expired_key_both_succeed() -> None:
    # Given a client's Idempotency-Key past its TTL, with its finished job
    owner, now = _expired_key()

    # When the keys' prune starts as the client's repeat of the key has freed it, before it saves
    # the key again
    with meanwhile(lambda: idempotency.idempotency_keys_prune(older_than=now - timedelta(days=1)),
                   at=f'DELETE FROM "{IdempotencyKey._meta.db_table}"', after=True) as pruned:
        new, created = submission.job_submit(owner=owner, request=SubmissionRequest(job_name=HELLO),
                                             idempotency_key="k")

    # Then the prune found the old key gone (no unique violation, no 500) and the key is the new job's
    assert pruned == [0]
    assert created and IdempotencyKey.objects.get(owner=owner, key="k").job_id == new.pk
