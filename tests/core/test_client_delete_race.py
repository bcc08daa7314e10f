"""A client deleted (the admin's delete) while a worker moves one of its jobs on: the deletion
goes through, and leaves nothing of the client. The deletion reads what the client owns, then
deletes it, then the client: a job's transition that committed in between (its job.* event, its
final state) left rows the deletion had not read, and the deletion failed at commit on their
foreign keys, the client left in place. A worker recording an attempt that disables the client's
endpoint as the deletion starts: both complete; before, they deadlocked, and PostgreSQL aborted
one of them (the deletion, as often as not: the operator's error page)."""
from __future__ import annotations

import io
import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django.test import Client as HttpClient
from django.utils import timezone

from core import http
from core.models import Client
from core.services import client_create, client_delete
from jobs import transitions
from jobs.models import Job, JobEvent
from jobs.submission import SubmissionRequest, job_submit
from tests.locks import meanwhile, rows_held
from webhooks import claims, endpoints, outbox, recording, reschedule, secrets
from webhooks.models import Delivery, DeliveryAttempt, Endpoint, Event

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


def test_a_client_deleted_as_a_worker_claims_its_delivery_is_deleted_with_the_attempt() -> None:
    # Given a client with a delivery not yet due (out of the session worker's sight), its
    # signing secret made
    client, delivery = _client_with_a_delivery_later("deleted-while-claimed")

    # When a worker claims it (opening its attempt) once the deletion has deleted the client's
    # attempts, just before it deletes its deliveries
    with meanwhile(lambda: _claimed_now(delivery), at='DELETE FROM "webhooks_delivery"') as claimed:
        client_delete(client=client)

    # Then the deletion went through, the attempt with the rest (before, it failed on the
    # attempt's foreign key, the client left in place)
    assert claimed == [1]
    assert not Client.objects.filter(pk=client.pk).exists()
    assert not Delivery.objects.filter(owner_id=client.pk).exists()
    assert not DeliveryAttempt.objects.filter(delivery_id=delivery.pk).exists()


def test_the_admins_deletion_of_a_client_as_a_worker_claims_its_delivery_goes_through() -> None:
    # Given a client with a delivery not yet due (out of the session worker's sight), its
    # signing secret made, and an operator on its admin page
    client, delivery = _client_with_a_delivery_later("deleted-by-the-admin-while-claimed")
    operator = HttpClient()
    operator.force_login(User.objects.create_superuser("admin", "admin@example.com", "pw"))

    # When the operator confirms its deletion, and a worker claims the delivery (opening its
    # attempt) once the deletion has deleted the client's attempts
    with meanwhile(lambda: _claimed_now(delivery), at='DELETE FROM "webhooks_delivery"') as claimed:
        response = operator.post(f"/admin/core/client/{client.pk}/delete/", {"post": "yes"})

    # Then the deletion went through, the attempt with the rest. Before, the admin's view runs
    # in a transaction of its own, so the foreign key was checked at its commit, past the
    # deletion's retry: a 500, the client left in place.
    assert claimed == [1]
    assert response.status_code == 302
    assert not Client.objects.filter(pk=client.pk).exists()
    assert not DeliveryAttempt.objects.filter(delivery_id=delivery.pk).exists()


def _client_with_a_delivery_later(name: str) -> tuple[Client, Delivery]:
    """A client with a delivery due in an hour (out of the session worker's sight), its signing
    secret made."""
    client = client_create(name=name)
    with transaction.atomic():
        event = outbox.event_record(owner_id=client.pk, subject_id=uuid.uuid4(), event_type="job.succeeded",
                                    data={"n": 1}, callback_url="http://127.0.0.1:9/hook", publish=False)
    delivery = Delivery.objects.get(event=event)
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now() + timedelta(hours=1))
    secrets.signing_secret_sealed_get_or_create(owner_id=client.pk, endpoint_id=None)
    return client, delivery


def _claimed_now(delivery: Delivery) -> int:
    """A worker's claim of the delivery, made due now (its attempt opened): how many it claimed."""
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    return len(claims.claim(scope=claims.Scope(delivery_ids=[delivery.pk]), token=uuid.uuid4()))


# Where the worker's transaction waits for the deletion to start: before it disables the endpoint
# (the deletion then holds the client), or once it holds the client's row (the deletion waits).
PAUSED_IN = {"deletion first": "endpoint_disable_failing", "worker first": "subscribers"}


@pytest.mark.parametrize("paused_in", PAUSED_IN.values(), ids=PAUSED_IN.keys())
def test_a_client_deleted_as_its_failing_endpoint_is_disabled_is_deleted_and_the_attempt_recorded(
    settings: Any, monkeypatch: pytest.MonkeyPatch, paused_in: str,
) -> None:
    # Given a client whose endpoint fails its next attempt for the last time before it is disabled,
    # and another endpoint of it told of that (endpoint.disabled), the attempt in flight
    settings.WEBHOOK_ENDPOINT_DISABLE_AFTER_FAILURES = 1
    settings.WEBHOOK_ENDPOINT_DISABLE_AFTER_SECONDS = 0
    client = client_create(name="deleted-while-disabled")
    failing = Endpoint.objects.create(owner=client, url="http://127.0.0.1:9/failing", event_types=["job.succeeded"])
    Endpoint.objects.create(owner=client, url="http://127.0.0.1:9/told", event_types=["endpoint.disabled"])
    with transaction.atomic():
        event = outbox.event_record(owner_id=client.pk, subject_id=uuid.uuid4(), event_type="job.succeeded",
                                    data={"n": 1}, endpoints=[failing], publish=False)
    token = uuid.uuid4()
    [claimed] = claims.claim(scope=claims.Scope(delivery_ids=[Delivery.objects.get(event=event).pk]), token=token)

    # When the worker records the failure, its transaction holding the attempt, the delivery and
    # the endpoint's health as it goes on to disable the endpoint, and meanwhile the operator's
    # deletion of the client starts (each on a connection of its own)
    reached, go = threading.Event(), threading.Event()
    paused = getattr(endpoints, paused_in)

    def once_the_deletion_waits(**kwargs: Any) -> Any:
        reached.set()
        go.wait(timeout=30)
        return paused(**kwargs)

    monkeypatch.setattr(endpoints, paused_in, once_the_deletion_waits)
    recorded = _on_a_connection_of_its_own(
        lambda: recording.record([(claimed, http.HttpResult(status_code=500))], token=token))
    assert reached.wait(timeout=30)
    deleted = _deleted_meanwhile(client, recorded, go)

    # Then both complete, neither aborted by a deadlock: the failure recorded, and the client
    # deleted with all it had (the endpoint.disabled event too, when the worker went first)
    assert recorded.outcome == "done" and deleted.outcome == "done"
    _nothing_left_of(client)


def _deleting(client: Client, endpoint: Endpoint) -> dict[str, tuple[Callable[[], object], str]]:
    """The writes that hold one of the client's endpoints, or its deliveries, as its deletion
    comes: each with the statement after which it waits for the deletion to start."""
    with transaction.atomic():
        event, later = (outbox.event_record(owner_id=client.pk, subject_id=uuid.uuid4(), event_type="job.succeeded",
                                            data={"n": n}, endpoints=[endpoint], publish=False) for n in (1, 2))
    Delivery.objects.filter(event=event).update(state=Delivery.State.FAILED)
    held = Delivery.objects.get(event=later)
    Delivery.objects.filter(pk=held.pk).update(state=Delivery.State.ENDPOINT_DISABLED, dispatched_at=None)
    return {
        # The client's requests
        "endpoint deleted": (lambda: endpoints.endpoint_delete(owner_id=client.pk, endpoint_id=endpoint.pk),
                             'UPDATE "webhooks_delivery" SET "state"'),
        "endpoint tested": (lambda: endpoints.endpoint_test(owner_id=client.pk, endpoint_id=endpoint.pk),
                            "WITH event AS"),
        "endpoint recovered": (lambda: endpoints.endpoint_recover(owner_id=client.pk, endpoint_id=endpoint.pk,
                                                                  since=event.created_at),
                               'INSERT INTO "webhooks_delivery"'),
        # A worker's batch of the deliveries held while it was disabled, sent again at its pace
        "held deliveries paced": (lambda: reschedule.endpoint_reschedule(
            endpoint_id=endpoint.pk, version=endpoint.schedule_version, before=held.created_at + timedelta(seconds=1),
        ), "UPDATE webhooks_delivery d SET"),
    }


WRITES = ["endpoint deleted", "endpoint tested", "endpoint recovered", "held deliveries paced"]


@pytest.mark.parametrize("write", WRITES)
def test_a_client_deleted_as_a_write_holds_its_endpoint_is_deleted_and_the_write_done(write: str) -> None:
    # Given a client with an endpoint (paced), a failed delivery to it and one held
    client = client_create(name="deleted-while-written")
    endpoint = Endpoint.objects.create(owner=client, url="http://127.0.0.1:9/hook", event_types=["job.succeeded"],
                                       rate_limit_per_second=1.0)
    work, after = _deleting(client, endpoint)[write]

    # When the write holds the endpoint (or its deliveries) as the operator's deletion of the
    # client starts (each on a connection of its own)
    reached, go = threading.Event(), threading.Event()

    def pause(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        result = execute(sql, params, many, context)
        if sql.startswith(after) and not reached.is_set():
            reached.set()
            go.wait(timeout=30)
        return result

    def paused() -> object:
        with connection.execute_wrapper(pause):
            return work()

    written = _on_a_connection_of_its_own(paused)
    assert reached.wait(timeout=30)
    deleted = _deleted_meanwhile(client, written, go)

    # Then both complete, neither aborted by a deadlock, and nothing of the client is left
    assert written.outcome == "done" and deleted.outcome == "done"
    _nothing_left_of(client)


def test_the_command_deletes_past_a_job_a_worker_holds_and_takes_it_last() -> None:
    # Given a client with finished jobs, and one a worker is moving on (its row held, as a
    # transition holds it until its commit)
    client = client_create(name=f"deleted-in-batches-{uuid.uuid4().hex[:8]}")
    Job.objects.bulk_create([Job(owner=client, job_name=HELLO, status=Job.Status.SUCCESS, finished_at=timezone.now())
                             for _ in range(5)])
    running = Job.objects.create(owner=client, job_name=HELLO, dispatched_at=timezone.now())
    assert transitions.job_start(job_id=running.id) is not None

    # When the operator's command deletes the client 2 rows a transaction meanwhile
    with rows_held(f"SELECT 1 FROM jobs_job WHERE id = '{running.pk}' FOR UPDATE") as blocked:
        deleted = _on_a_connection_of_its_own(lambda: call_command(
            "client_delete", str(client.pk), "--yes", "--batch-rows", "2", stdout=io.StringIO()))
        blocked(1)

        # Then its batches went past the held job without waiting for it: only the last
        # transaction, which takes the client's unfinished jobs first, waits for it (before, the
        # one transaction waited before it had deleted anything)
        assert list(Job.objects.filter(owner=client).values_list("pk", flat=True)) == [running.pk]
    deleted.join()

    # And once the worker let go, the client is gone with it and its events
    assert deleted.outcome == "done"
    _nothing_left_of(client)
    assert not Job.objects.filter(owner_id=client.pk).exists()
    assert not JobEvent.objects.filter(owner_id=client.pk).exists()


def _nothing_left_of(client: Client) -> None:
    """The client is gone, with its endpoints, deliveries and events."""
    assert not Client.objects.filter(pk=client.pk).exists()
    assert not Endpoint.objects.filter(owner_id=client.pk).exists()
    assert not Delivery.objects.filter(owner_id=client.pk).exists()
    assert not Event.objects.filter(owner_id=client.pk).exists()


def _deleted_meanwhile(client: Client, held: _Work, go: threading.Event) -> _Work:
    """The client's deletion, begun while `held` is paused holding its rows: once the deletion
    waits for them, `held` goes on (`go`); both ended."""
    with rows_held() as blocked:
        deleted = _on_a_connection_of_its_own(lambda: client_delete(client=client))
        blocked(1)
        go.set()
        held.join()
        deleted.join()
    return deleted


class _Work(threading.Thread):
    """`work` in a thread, on a connection of its own; its outcome "done", or the database error
    it raised (a deadlock's victim)."""

    def __init__(self, work: Callable[[], object]) -> None:
        super().__init__()
        self.work, self.outcome = work, ""

    def run(self) -> None:
        try:
            self.work()
            self.outcome = "done"
        except DatabaseError as exc:
            self.outcome = repr(exc)
        finally:
            connection.close()


def _on_a_connection_of_its_own(work: Callable[[], object]) -> _Work:
    thread = _Work(work)
    thread.start()
    return thread


def test_a_client_deleted_as_it_submits_a_job_is_deleted_with_the_job() -> None:
    # Given a client (its job scheduled for later: out of the session worker's sight)
    client = client_create(name=f"deleted-while-submitting-{uuid.uuid4().hex[:8]}")
    later = SubmissionRequest(job_name=HELLO, run_at=timezone.now() + timedelta(hours=1))

    # When the operator's deletion starts as the client's submission has inserted its job (its
    # owner's count row held, its foreign key checked at its commit). PostgreSQL aborts whichever
    # of the two looks for the deadlock first with the other already waiting; the deletion is
    # made the one, so that the test does not hang on the machine's load: it looks 3 s into its
    # wait (the submission waits by then), the submission not before 30 s. (The other way round,
    # the submission fails, the client being deleted, and the deletion goes through.)
    def deletion() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SET deadlock_timeout = '3s'")
        client_delete(client=Client.objects.get(pk=client.pk))

    with meanwhile(deletion, at="INSERT INTO jobs_job ", after=True) as deleted, transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL deadlock_timeout = '30s'")
        job, _created = job_submit(owner=client, request=later)

    # Then both went through, the deletion after the submission, with its job: before, each
    # waited for the other (the count row, the client's row) and PostgreSQL aborted the deletion
    assert deleted == [None]
    assert not Client.objects.filter(pk=client.pk).exists()
    assert not Job.objects.filter(pk=job.pk).exists()
