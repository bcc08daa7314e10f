"""Beyond one broker: the end-to-end flow with RabbitMQ as the broker, workers in separate
processes (as on separate hosts), in a RabbitMQ virtual host of this test's own."""
from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from standardwebhooks import Webhook

from tests.faults.stack import Stack, WebhookReceiver, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

RABBITMQ = "127.0.0.1:5672"


@pytest.fixture
def rabbitmq_vhost() -> Iterator[str]:
    """A fresh vhost on the machine's RabbitMQ (queues named `jobs`/`webhooks` never collide
    with anyone else's), deleted afterwards."""
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        pytest.fail("rabbitmqctl is needed to create a private vhost on the RabbitMQ server")
    vhost = f"jobapi-faults-{uuid.uuid4().hex[:8]}"
    subprocess.run([ctl, "add_vhost", vhost], check=True, capture_output=True, timeout=60)
    try:
        subprocess.run([ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
                       check=True, capture_output=True, timeout=60)
        yield vhost
    finally:
        subprocess.run([ctl, "delete_vhost", vhost], check=False, capture_output=True, timeout=60)


def test_end_to_end_with_rabbitmq_as_the_broker(
    make_stack: Callable[..., Stack], rabbitmq_vhost: str, receiver: WebhookReceiver,
    figures: dict[str, Any],
) -> None:
    # Given the API, a jobs worker and a deliveries worker, each its own process, on RabbitMQ
    stack = make_stack(broker_url=f"amqp://guest:guest@{RABBITMQ}/{rabbitmq_vhost}")
    stack.start_service(jobs=2, deliveries=2)
    api = stack.client()
    secret = api.get("/api/webhook-secret/").json()["secret"]

    # When a client submits jobs with a callback and polls them
    hello = api.submit("api.tasks.hello_world", {"message": "rabbit"}, callback_url=receiver.url)
    long = api.submit("api.tasks.long_running_task", {"duration": 2, "message": "hop"},
                      callback_url=receiver.url, webhook_events=["job.started", "job.succeeded"])
    done_hello = api.wait(hello["id"], timeout=60)
    done_long = api.wait(long["id"], timeout=60)

    # Then both ran, and their signed webhooks arrived once each
    assert done_hello["status"] == "SUCCESS" and done_hello["result"] == "hello world rabbit"
    assert done_long["status"] == "SUCCESS"
    assert done_long["result"] == "Slept for 2 seconds. Message: hop"
    wait_for(lambda: len(receiver.ids()) >= 3, timeout=60, what="three webhooks")
    verifier = Webhook(secret)
    events = sorted((verifier.verify(r.body, r.headers)["type"], r.payload["data"]["id"])
                    for r in receiver.received)
    assert events == sorted([("job.succeeded", hello["id"]), ("job.started", long["id"]),
                             ("job.succeeded", long["id"])])
    assert len(set(receiver.ids())) == 3
    for job_id in (hello["id"], long["id"]):
        assert all(d["state"] == "succeeded" for d in api.deliveries(job_id))
    # The workers really were on RabbitMQ.
    assert any(host.startswith("jobs-") for reply in stack.ping() for host in reply)
    figures.update(broker="amqp", jobs=2, webhooks=len(receiver.ids()))
