"""End to end: a job with a callback_url -> worker -> outbox -> delivery worker -> receiver."""
from __future__ import annotations

from collections.abc import Callable

import pytest
from django.utils.dateparse import parse_datetime
from standardwebhooks import Webhook

from examples.receiver import Receiver, Reply
from tests.conftest import Api
from tests.webhooks.conftest import HELLO, LONG, all_final, secret_of, wait_deliveries


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


def test_failed_job_still_sends_job_failed(api: Api, receiver: Receiver) -> None:
    from jobs.models import Job
    from jobs.transitions import job_finish

    # Given a running job with a callback
    secret = secret_of(api)
    created = api.submit(LONG, {"duration": 2}, callback_url=receiver.url)
    api.wait(created["id"], until=lambda job: job["status"] == "STARTED")

    # When it fails the way a vanished worker's job does (the sweeper writes FAILURE on the row)
    job_finish(
        job_id=created["id"],
        status=Job.Status.FAILURE,
        error={"type": "worker_lost", "message": "The worker running this job was lost."},
    )
    job = api.wait(created["id"])

    # Then the callback hears job.failed with the error, exactly once
    [received] = receiver.wait_for(1)
    event = Webhook(secret).verify(received.body, received.headers)
    assert event["type"] == "job.failed"
    assert event["data"]["status"] == "FAILURE" == job["status"]
    assert event["data"]["error"] == {"type": "worker_lost", "message": "The worker running this job was lost."}
    [delivery] = wait_deliveries(api, created["id"], all_final)
    assert delivery["state"] == "succeeded" and delivery["event_type"] == "job.failed"


def test_canceled_job_sends_job_canceled(api: Api, receiver: Receiver) -> None:
    secret = secret_of(api)
    created = api.submit(LONG, {"duration": 60}, callback_url=receiver.url)
    api.wait(created["id"], until=lambda job: job["status"] == "STARTED")

    assert api.post(f"/api/jobs/{created['id']}/cancel/").status_code == 202
    api.wait(created["id"])

    [received] = receiver.wait_for(1)
    event = Webhook(secret).verify(received.body, received.headers)
    assert event["type"] == "job.canceled"
    assert event["data"]["status"] == "REVOKED"


def test_job_canceled_while_queued_sends_job_canceled(api: Api, receiver: Receiver) -> None:
    from jobs.transitions import job_cancel

    created = api.submit(LONG, {"duration": 60}, callback_url=receiver.url)
    try:
        job_cancel(owner=api.client, job_id=created["id"])  # type: ignore[arg-type]
    except Exception:  # it had started already: cancel over HTTP like any running job
        api.post(f"/api/jobs/{created['id']}/cancel/")
    api.wait(created["id"])

    [received] = receiver.wait_for(1)
    assert received.event["type"] == "job.canceled"


def test_webhook_events_filter_picks_the_events(api: Api, receiver: Receiver) -> None:
    # Given a job that asks for started and progress only
    created = api.submit(
        LONG, {"duration": 2}, callback_url=receiver.url, webhook_events=["job.started", "job.progress"]
    )

    # When it runs to the end
    api.wait(created["id"])
    deliveries = wait_deliveries(api, created["id"], lambda ds: all_final(ds) and len(ds) >= 2)

    # Then it got job.started and job.progress, and no final event
    types = [d["event_type"] for d in sorted(deliveries, key=lambda d: d["id"])]
    assert types[0] == "job.started"
    assert set(types[1:]) == {"job.progress"}
    received = receiver.wait_for(len(deliveries))
    assert {r.event["type"] for r in received} == {"job.started", "job.progress"}
    started = next(r.event for r in received if r.event["type"] == "job.started")
    assert started["data"]["status"] == "STARTED"


def test_no_webhook_without_callback_url(api: Api) -> None:
    from webhooks.models import Delivery, Event

    created = api.submit(HELLO)
    api.wait(created["id"])

    assert api.get(f"/api/jobs/{created['id']}/deliveries/").json() == {
        "results": [], "next": None, "previous": None
    }
    assert not Event.objects.filter(subject_id=created["id"]).exists()
    assert not Delivery.objects.filter(subject_id=created["id"]).exists()


def test_receiver_failing_twice_then_200_gets_three_signed_attempts_with_one_id(
    api: Api, make_receiver: Callable[..., Receiver]
) -> None:
    # Given a receiver that answers 500, then 502, then 200
    secret = secret_of(api)
    receiver = make_receiver(Reply(status=500, body=b"boom"), Reply(status=502))
    created = api.submit(HELLO, callback_url=receiver.url)

    # When the job finishes and the retries run (schedule 0,1,1 in tests)
    api.wait(created["id"])
    [delivery] = wait_deliveries(api, created["id"], all_final)
    received = receiver.wait_for(3)

    # Then three attempts were logged and the last succeeded
    assert delivery["state"] == "succeeded"
    assert [a["number"] for a in delivery["attempts"]] == [1, 2, 3]
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 502, 200]
    assert delivery["attempts"][0]["response_body"] == "boom"
    assert all(a["duration_ms"] is not None and a["started_at"] for a in delivery["attempts"])
    # ... with one webhook-id, the same body bytes and a valid signature on each
    assert len(received) == 3
    assert {r.headers["webhook-id"] for r in received} == {delivery["webhook_id"]}
    assert len({r.body for r in received}) == 1
    for request in received:
        Webhook(secret).verify(request.body, request.headers)


def test_receiver_that_always_fails_exhausts_the_schedule(
    api: Api, make_receiver: Callable[..., Receiver]
) -> None:
    receiver = make_receiver(*[Reply(status=500)] * 3)
    created = api.submit(HELLO, callback_url=receiver.url)

    [delivery] = wait_deliveries(api, created["id"], all_final)

    assert delivery["state"] == "failed"
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 500]
    assert delivery["next_attempt_at"] is None
    assert api.get(f"/api/jobs/{created['id']}/").json()["status"] == "SUCCESS"  # not the job's failure


def test_410_gone_stops_retrying(api: Api, make_receiver: Callable[..., Receiver]) -> None:
    receiver = make_receiver(Reply(status=410))
    created = api.submit(HELLO, callback_url=receiver.url)

    [delivery] = wait_deliveries(api, created["id"], all_final)

    assert delivery["state"] == "failed"
    assert [a["status_code"] for a in delivery["attempts"]] == [410]
    assert len(receiver.received) == 1


def test_a_timeout_is_a_failed_attempt_then_retried(api: Api, make_receiver: Callable[..., Receiver]) -> None:
    # WEBHOOK_TIMEOUT_SECONDS is 3 in tests; the first answer comes after 5 s.
    receiver = make_receiver(Reply(status=200, delay_seconds=5))
    created = api.submit(HELLO, callback_url=receiver.url)

    [delivery] = wait_deliveries(api, created["id"], all_final)

    assert delivery["state"] == "succeeded"
    first, second = delivery["attempts"]
    assert first["status_code"] is None and "No response within 3 s" in first["error"]
    assert second["status_code"] == 200 and second["error"] == ""


@pytest.mark.parametrize("name", ["Retry-After", "retry-after"])  # a header's name is case-insensitive
def test_retry_after_is_honoured(api: Api, make_receiver: Callable[..., Receiver], name: str) -> None:
    # The schedule would retry after about 1 s; the receiver asks for 3.
    receiver = make_receiver(Reply(status=503, headers={name: "3"}))
    created = api.submit(HELLO, callback_url=receiver.url)

    [delivery] = wait_deliveries(api, created["id"], all_final)

    assert delivery["state"] == "succeeded"
    first, second = delivery["attempts"]
    assert (first["status_code"], second["status_code"]) == (503, 200)
    gap = parse_datetime(second["started_at"]) - parse_datetime(first["started_at"])  # type: ignore[operator]
    assert gap.total_seconds() >= 3


def test_redirects_are_not_followed_even_toward_allowed_addresses(
    api: Api, make_receiver: Callable[..., Receiver]
) -> None:
    target = make_receiver()
    redirecting = make_receiver(
        Reply(status=302, headers={"Location": target.url}),
        Reply(status=301, headers={"Location": "http://169.254.169.254/latest/meta-data/"}),
        Reply(status=307, headers={"Location": target.url}),
    )
    created = api.submit(HELLO, callback_url=redirecting.url)

    [delivery] = wait_deliveries(api, created["id"], all_final)

    assert delivery["state"] == "failed"  # a 3xx is a failure
    assert [a["status_code"] for a in delivery["attempts"]] == [302, 301, 307]
    assert target.received == []
