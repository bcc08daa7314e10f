"""A client being deleted by batches (the client_delete command, minutes for a big client; jobs go
last): its queued jobs start no more and its running ones stop as the deletion starts, with a
real worker. They went on taking workers (and model tokens) until the batches reached them."""
from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from core.models import Client
from core.services import api_key_create, client_create, client_delete_in_batches
from core.signals import client_deletion_started
from jobs.models import Job
from tests.conftest import Api
from webhooks import deletion as webhooks_deletion
from webhooks.endpoints import endpoint_create
from webhooks.models import Delivery

LONG = "api.tasks.long_running_task"
HELLO = "api.tasks.hello_world"
RECEIVER = "http://127.0.0.1:9/hooks"


def _waited(until: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_deleted_clients_jobs_stop_while_anothers_run(
    make_api: Callable[..., Api], live_server: Any, celery_worker: str
) -> None:
    # Given a client (not make_api's, which waits for its clients' jobs at its end) with an
    # endpoint for job.canceled, its running job and its jobs scheduled two seconds ahead, each
    # with a callback_url, and another client
    owner = client_create(name="leaving")
    endpoint_create(owner_id=owner.pk, url=RECEIVER, event_types=["job.canceled"])
    leaving, staying = Api(live_server.url, api_key_create(client=owner), owner), make_api("staying")
    running = leaving.submit(LONG, {"duration": 60}, callback_url=RECEIVER)
    leaving.wait(running["id"], until=lambda job: job["status"] == "STARTED")
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    scheduled = [leaving.submit(name, payload, run_at=soon, callback_url=RECEIVER)["id"]
                 for name, payload in ((HELLO, {}), (LONG, {"duration": 60}))]
    seen: dict[str, object] = {}

    def held_midway(kind: str, deleted: int) -> None:
        if seen:
            return
        # The other client's job runs meanwhile; the scheduled jobs' time passes (the sweeper
        # looks every second)
        elsewhere = staying.submit(HELLO)
        seen["elsewhere"] = staying.wait(elsewhere["id"])["status"]
        seen["running stopped"] = _waited(
            lambda: Job.objects.filter(pk=running["id"], status=Job.Status.REVOKED).exists(), timeout=5
        )
        time.sleep(max(0.0, (datetime.fromisoformat(soon) - datetime.now(UTC)).total_seconds()) + 3)
        seen["scheduled"] = sorted(Job.objects.filter(pk__in=scheduled).values_list("status", "started_at"))
        seen["job.canceled deliveries"] = Delivery.objects.filter(
            owner_id=leaving.client.pk, event_type="job.canceled"
        ).count()

    # When the operator deletes the client, the deletion held at its first batch
    client_delete_in_batches(client=leaving.client, batch_rows=1, progress=held_midway)

    # Then its running job stopped within seconds, its scheduled jobs never started (canceled),
    # no job.canceled delivery was recorded, and the other client's job ran
    assert seen == {
        "elsewhere": "SUCCESS",
        "running stopped": True,
        "scheduled": [(Job.Status.REVOKED, None), (Job.Status.REVOKED, None)],
        "job.canceled deliveries": 0,
    }
    assert not Job.objects.filter(owner_id=leaving.client.pk).exists()


def test_a_job_submitted_as_the_deletion_starts_sends_no_job_canceled_to_its_callback(
    transactional_db: Any, monkeypatch: Any
) -> None:
    # Given a client whose job with a callback_url is submitted after the deletion cleared its
    # jobs' callback_urls (a key another process still took), while its webhooks are stopped
    owner = client_create(name="leaving")
    stop = webhooks_deletion.owner_deliveries_stop

    def stop_then_submitted(*, owner_id: Any) -> int:
        Job.objects.create(owner_id=owner_id, job_name=HELLO, callback_url=RECEIVER)
        return stop(owner_id=owner_id)

    monkeypatch.setattr(webhooks_deletion, "owner_deliveries_stop", stop_then_submitted)

    # When the client's deletion starts
    client_deletion_started.send(sender=Client, client_id=owner.pk)

    # Then the job is canceled and its job.canceled event goes to no receiver
    assert list(Delivery.objects.filter(owner_id=owner.pk).values_list("event_type", "url")) == []
    assert list(Job.objects.filter(owner=owner).values_list("status", "callback_url")) == [(Job.Status.REVOKED, "")]
