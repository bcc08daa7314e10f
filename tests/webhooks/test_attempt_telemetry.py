"""What delivery attempts move in /metrics: each outcome by kind (never the receiver's text, URL
or host), the time from an event to its delivery; and end to end, a job and its webhook counted
by the API and the worker alike (the run's one multiprocess directory)."""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from django.test import Client as BrowserClient
from django.test import override_settings

from core.services import client_create
from examples.receiver import Receiver, Reply
from tests.conftest import Api, free_port, worker_log_lines
from tests.console.test_metrics import Samples, parse, scrape, value
from tests.webhooks.conftest import deliveries_of, until
from webhooks import attempts, outbox


def _scrape() -> Samples:
    response = BrowserClient().get("/metrics", HTTP_AUTHORIZATION="Bearer test-metrics-token")
    assert response.status_code == 200
    return parse(response.content.decode())


def _attempts_counted(before: Samples, after: Samples) -> dict[str, float]:
    """The attempts counted between two scrapes, by outcome (those that moved)."""
    changed = {
        dict(labels)["outcome"]: after[(name, labels)] - before.get((name, labels), 0.0)
        for name, labels in after if name == "jobapi_webhook_attempts_total"
    }
    return {kind: n for kind, n in changed.items() if n}


def _attempt_once(url: str) -> None:
    client = client_create(name=f"t-{uuid.uuid4().hex[:6]}")
    # Recorded, not published: this test sends the attempt itself.
    outbox.event_record(owner_id=client.pk, subject_id=uuid.uuid4(), event_type="job.succeeded",
                        data={"id": "x"}, callback_url=url, publish=False)
    from webhooks.models import Delivery

    delivery = Delivery.objects.filter(owner=client).get()
    [made] = attempts.deliveries_attempt(delivery_ids=[delivery.pk])
    assert made.delivery_id == delivery.pk


@pytest.mark.django_db
@pytest.mark.parametrize(("reply", "outcome"), [
    (Reply(status=204), "success"),
    (Reply(status=500, body=b"receiver says no"), "http_error"),
    (Reply(status=200, delay_seconds=2.0), "timeout"),
])
@override_settings(WEBHOOK_TIMEOUT_SECONDS=0.5)
def test_each_answer_is_counted_by_its_kind(make_receiver: Callable[..., Receiver], reply: Reply, outcome: str) -> None:
    receiver = make_receiver(reply)
    before = _scrape()

    _attempt_once(receiver.url)

    after = _scrape()
    assert _attempts_counted(before, after) == {outcome: 1}
    delivered = value(after, "jobapi_webhook_delivery_seconds_count") - value(before, "jobapi_webhook_delivery_seconds_count")
    assert delivered == (1 if outcome == "success" else 0)
    assert "127.0.0.1" not in "".join(str(key) for key in after)


@pytest.mark.django_db
@pytest.mark.parametrize(("url", "outcome"), [
    (f"http://127.0.0.1:{free_port()}/down", "refused"),  # nothing listens there
    ("http://10.20.30.40/internal", "blocked"),  # the private-network guard: nothing is sent
])
def test_a_receiver_down_and_an_address_refused_are_told_apart(url: str, outcome: str) -> None:
    before = _scrape()

    _attempt_once(url)

    after = _scrape()
    assert value(after, "jobapi_webhook_attempts_total", outcome=outcome) - value(
        before, "jobapi_webhook_attempts_total", outcome=outcome) == 1


def test_a_job_and_its_webhook_move_the_counters(
    api: Api, make_receiver: Callable[..., Receiver], live_server: Any
) -> None:
    # Given the figures before, and a receiver that fails once then takes the webhook
    receiver = make_receiver(Reply(status=500), Reply(status=200))
    before = scrape(live_server.url)

    # When a job with a callback runs, and its webhook is delivered on the second attempt
    job = api.submit("api.tasks.hello_world", {"message": "m"}, callback_url=receiver.url)
    api.wait(job["id"])
    receiver.wait_for(1, timeout=30)
    # (The suite's one worker may still be finishing other tests' deliveries, whose attempts
    # count too: wait for the success and its delivery time both, and count them at least once.)
    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    deadline = time.monotonic() + 30
    while True:
        after = scrape(live_server.url)
        delivered = delta("jobapi_webhook_attempts_total", outcome="success") >= 1
        if (delivered and delta("jobapi_webhook_delivery_seconds_count") >= 1) or time.monotonic() > deadline:
            break
        time.sleep(0.2)

    # Then the API counted the submission and the request, the worker the run and the attempts

    hello = {"job_name": "api.tasks.hello_world"}
    assert delta("jobapi_jobs_submitted_total", **hello) == 1
    assert delta("jobapi_jobs_finished_total", status="SUCCESS", **hello) == 1
    assert delta("jobapi_job_queue_wait_seconds_count", **hello) == 1
    assert delta("jobapi_job_run_seconds_count", **hello) == 1
    assert delta("jobapi_webhook_attempts_total", outcome="http_error") >= 1
    assert delta("jobapi_webhook_attempts_total", outcome="success") >= 1
    assert delta("jobapi_webhook_delivery_seconds_count") >= 1
    assert delta("jobapi_webhook_delivery_seconds_sum") > 0
    assert delta("jobapi_http_requests_total", route="api/jobs/", method="POST", status="202") == 1
    assert delta("jobapi_http_request_duration_seconds_count", route="api/jobs/<uuid:job_id>/", method="GET") >= 1


def test_a_clients_first_delivery_given_up_is_one_warning_naming_its_job(
    api: Api, make_receiver: Callable[..., Receiver], celery_worker_log: Path
) -> None:
    # Given a receiver that fails every attempt of the schedule (three in the tests)
    receiver = make_receiver(*[Reply(status=503, body=b"down for maintenance")] * 3)

    # When a job's webhook goes to it, and the service gives the delivery up
    job = api.submit("api.tasks.hello_world", {"message": "m"}, callback_url=f"{receiver.url}hook?token=s3cr3t")
    api.wait(job["id"])
    [delivery] = until(lambda: [d for d in deliveries_of(api, job["id"]) if d["state"] == "failed"], what="given up")

    # Then the worker says so once at WARNING (the default level), its client's first: with the
    # job, the delivery, its webhook-id, the receiver's host (not its URL) and its last answer
    [line] = until(lambda: worker_log_lines(celery_worker_log, "webhook deliveries given up", f"job_id={job['id']}"),
                   what="the worker's line")
    assert line["level"] == "warning"
    assert (line["delivery_id"], line["webhook_id"], line["attempts"], line["status_code"], line["receiver"],
            line["client"], line["given_up"]) == (str(delivery["id"]), delivery["webhook_id"], "3", "503",
                                                  "127.0.0.1", str(api.client.pk), "1")
    assert not any("s3cr3t" in text for text in line.values())


@pytest.mark.django_db
def test_each_delivery_given_up_is_told_even_when_another_of_its_batch_was_taken_over(
    make_receiver: Callable[..., Receiver], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two deliveries on the last attempt of their schedule (three in the tests), to a
    # receiver that fails them both
    receiver = make_receiver(*[Reply(status=503)] * 2)
    client = client_create(name=f"t-{uuid.uuid4().hex[:6]}")
    for _ in range(2):
        outbox.event_record(owner_id=client.pk, subject_id=uuid.uuid4(), event_type="job.succeeded",
                            data={"id": "x"}, callback_url=receiver.url, publish=False)
    from webhooks.models import Delivery

    Delivery.objects.filter(owner=client).update(attempt_count=2)
    first, taken_over = Delivery.objects.filter(owner=client).order_by("pk")

    # When the batch sends both, but one's claim expires meanwhile and another worker takes it
    send_batch = attempts.sending.send_batch

    def slow_batch(claims: Any, send: Any, finished: Any) -> None:
        def taken_over_first(sent: Any) -> None:
            Delivery.objects.filter(pk=taken_over.pk).update(claim_token=uuid.uuid4())
            finished(sent)

        send_batch(claims, send, taken_over_first)

    monkeypatch.setattr(attempts.sending, "send_batch", slow_batch)
    with structlog.testing.capture_logs() as lines:
        attempts.deliveries_attempt(delivery_ids=[first.pk, taken_over.pk])

    # Then the delivery this batch gave up is told, the other left to its new holder
    told = [line for line in lines if line["event"] == "webhook deliveries given up"]
    assert [(line["delivery_id"], line["given_up"]) for line in told] == [(first.pk, 1)]
    assert Delivery.objects.get(pk=first.pk).state == Delivery.State.FAILED


@pytest.mark.django_db
def test_an_internal_error_is_told_apart_from_the_receivers(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the sending of an attempt raising (a bug of ours, not the receiver's doing)
    def raises(*args: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(attempts, "_send", raises)
    before = _scrape()

    # When the attempt is made
    _attempt_once(receiver.url)

    # Then it counts as an internal error, not as one of the receiver's errors
    assert _attempts_counted(before, _scrape()) == {"internal_error": 1}
