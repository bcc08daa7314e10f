"""End to end: a job with a callback_url -> worker -> outbox -> delivery worker -> receiver."""
from __future__ import annotations

from standardwebhooks import Webhook

from examples.receiver import Receiver
from tests.conftest import Api
from tests.webhooks.conftest import HELLO, all_final, secret_of, wait_deliveries


def test_succeeded_job_sends_one_signed_webhook_with_the_job(api: Api, receiver: Receiver) -> None:
    # Given a client's secret and a job with a callback
    secret = secret_of(api)
    created = api.submit(HELLO, {"message": "hook"}, callback_url=receiver.url)

    # When the job finishes
    job = api.wait(created["id"])
    [received] = receiver.wait_for(1)

    # Then the receiver got job.succeeded, signed, with the job as the API shows it
    event = Webhook(secret).verify(received.body, received.headers)
    assert event["type"] == "job.succeeded"
    assert event["data"] == job
    assert received.headers["content-type"] == "application/json"
    assert received.headers["webhook-id"].startswith("msg_")
    deliveries = wait_deliveries(api, created["id"], all_final)
    [delivery] = deliveries
    assert delivery["state"] == "succeeded"
    assert delivery["webhook_id"] == received.headers["webhook-id"]
    assert [a["status_code"] for a in delivery["attempts"]] == [200]
