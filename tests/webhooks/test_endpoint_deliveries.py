"""End to end, through HTTP and the suite's real workers: registered endpoints get exactly the
events they subscribe to, signed with their own secrets and carrying their headers, at their
pace; an endpoint that keeps failing is disabled, enabled again by its client, and recovered.

The test run shortens the disabling rule (tests/settings.py): three failed attempts in a row
over at least a second.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from examples.receiver import Receiver, Reply
from tests.conftest import Api, worker_log_lines
from tests.console.test_metrics import scrape, value
from tests.webhooks.conftest import (
    HELLO,
    all_final,
    assert_arrived_paced,
    secret_of,
    until,
    wait_deliveries,
)


def endpoint_create(api: Api, url: str, **body: Any) -> dict[str, Any]:
    response = api.post("/api/webhook-endpoints/", json={"url": url, **body})
    assert response.status_code == 201, response.text
    return response.json()


def endpoint_secret(api: Api, endpoint: dict[str, Any]) -> str:
    response = api.get(f"/api/webhook-endpoints/{endpoint['id']}/secret/")
    assert response.status_code == 200, response.text
    return str(response.json()["secret"])


def endpoint_read(api: Api, endpoint: dict[str, Any]) -> dict[str, Any]:
    response = api.get(f"/api/webhook-endpoints/{endpoint['id']}/")
    assert response.status_code == 200, response.text
    return dict(response.json())


def deliveries_to(api: Api, endpoint: dict[str, Any], **filters: str) -> list[dict[str, Any]]:
    response = api.get("/api/deliveries/", params={"endpoint": endpoint["id"], **filters})
    assert response.status_code == 200, response.text
    return list(response.json()["results"])


def test_each_endpoint_and_the_callback_get_exactly_their_events_signed_with_their_own_secrets(
    api: Api, make_receiver: Callable[..., Receiver]
) -> None:
    # Given an endpoint for the final events with a custom header, one for job.started only,
    # and a job with its own callback_url
    finals, starts, callback = make_receiver(), make_receiver(), make_receiver()
    final_endpoint = endpoint_create(api, finals.url, headers={"X-Team": "billing"})
    start_endpoint = endpoint_create(api, starts.url, event_types=["job.started"])
    created = api.submit(HELLO, {"message": "fan-out"}, callback_url=callback.url)

    # When the job runs to the end
    job = api.wait(created["id"])
    wait_deliveries(api, created["id"], lambda ds: len(ds) == 3 and all_final(ds))

    # Then each receiver got its events, verified with its own secret (the callback with the
    # client's), and the final event has one webhook-id wherever it went
    [final] = finals.wait_for(1)
    [started] = starts.wait_for(1)
    [called_back] = callback.wait_for(1)
    assert Webhook(endpoint_secret(api, final_endpoint)).verify(final.body, final.headers)["data"] == job
    assert Webhook(endpoint_secret(api, start_endpoint)).verify(started.body, started.headers)["type"] == "job.started"
    assert Webhook(secret_of(api)).verify(called_back.body, called_back.headers)["type"] == "job.succeeded"
    assert final.headers["webhook-id"] == called_back.headers["webhook-id"]
    assert final.headers["x-team"] == "billing"
    assert "x-team" not in called_back.headers and "x-team" not in started.headers

    # And a job that opts out of its owner's endpoints reaches its callback alone
    alone = api.post("/api/jobs/", json={"job_name": HELLO, "callback_url": callback.url, "webhook_endpoints": False})
    assert alone.status_code == 202, alone.text
    api.wait(alone.json()["id"])
    callback.wait_for(2)
    time.sleep(0.5)
    assert len(finals.received) == 1 and len(starts.received) == 1


def test_an_endpoints_rate_limit_spaces_its_deliveries(api: Api, receiver: Receiver) -> None:
    # Given an endpoint paced at 4 deliveries a second
    endpoint_create(api, receiver.url, rate_limit_per_second=4)

    # When six jobs finish at about the same time
    jobs = [api.submit(HELLO, {"message": str(n)}) for n in range(6)]
    for job in jobs:
        api.wait(job["id"])
    received = receiver.wait_for(6, timeout=30)

    # Then every event arrives, none dropped, a quarter of a second apart or more (less a
    # little for the arrival's own jitter)
    assert len({r.headers["webhook-id"] for r in received}) == 6
    assert_arrived_paced([r.received_at for r in received], every_seconds=0.25)


def test_deliveries_due_together_still_go_at_the_endpoints_pace(api: Api, receiver: Receiver) -> None:
    # Given an endpoint disabled with six job events held (paced at one a hundred seconds, only
    # the first of seven went before it was disabled)
    endpoint = endpoint_create(api, receiver.url, rate_limit_per_second=0.01)
    for n in range(7):
        api.wait(api.submit(HELLO, {"message": f"held {n}"})["id"])
    receiver.wait_for(1)
    disabled = api.request("PATCH", f"/api/webhook-endpoints/{endpoint['id']}/", json={"enabled": False})
    assert disabled.status_code == 200, disabled.text
    until(lambda: len(deliveries_to(api, endpoint, state="endpoint_disabled")) == 6, what="six held")

    # When it is enabled again at 4 deliveries a second: the six are all due within 1.5 s
    enabled = api.request("PATCH", f"/api/webhook-endpoints/{endpoint['id']}/",
                          json={"enabled": True, "rate_limit_per_second": 4})
    assert enabled.status_code == 200, enabled.text
    received = receiver.wait_for(7, timeout=30)[1:]

    # Then they still arrive a quarter of a second apart or more (less the arrival's jitter)
    assert len({r.headers["webhook-id"] for r in received}) == 6
    assert_arrived_paced([r.received_at for r in received], every_seconds=0.25)


def test_a_failing_endpoint_is_disabled_then_enabled_again_and_its_failures_recovered(
    api: Api, make_receiver: Callable[..., Receiver]
) -> None:
    # Given an endpoint whose receiver fails three times, and another endpoint told when an
    # endpoint is disabled
    broken = make_receiver(*[Reply(status=500, body=b"down")] * 3)
    watcher = make_receiver()
    endpoint = endpoint_create(api, broken.url)
    watching = endpoint_create(api, watcher.url, event_types=["endpoint.disabled"])

    # When a job's event fails all its attempts (three, a second apart: the shortened rule)
    job = api.submit(HELLO, {"message": "lost"})
    api.wait(job["id"])
    disabled = until(lambda: (e := endpoint_read(api, endpoint)) and not e["enabled"] and e, what="disabled")

    # Then the endpoint is disabled as failing, with its health, and the watcher is told
    assert disabled["disabled_reason"] == "failing"
    assert disabled["disabled_at"] >= disabled["health"]["last_failure_at"]  # at the failure that disabled it
    assert disabled["health"]["consecutive_failures"] == 3
    assert disabled["health"]["last_failure_at"] is not None and disabled["health"]["last_success_at"] is None
    [told] = watcher.wait_for(1)
    event = Webhook(endpoint_secret(api, watching)).verify(told.body, told.headers)
    assert event["type"] == "endpoint.disabled" and event["data"]["id"] == endpoint["id"]
    assert event["data"]["disabled_at"] == disabled["disabled_at"]
    assert "secret" not in event["data"]

    # And a job finishing while it is disabled makes no delivery to it
    quiet = api.submit(HELLO, {"message": "while disabled"})
    api.wait(quiet["id"])
    time.sleep(0.5)
    assert deliveries_to(api, endpoint, job=quiet["id"]) == [] and len(broken.received) == 3

    # When its client enables it (the receiver works again) and recovers what failed since
    # it was made: the failed delivery goes again, with its webhook-id
    enabled = api.request("PATCH", f"/api/webhook-endpoints/{endpoint['id']}/", json={"enabled": True})
    assert enabled.status_code == 200 and (enabled.json()["disabled_reason"], enabled.json()["disabled_at"]) == (None, None)
    [failed] = deliveries_to(api, endpoint, job=job["id"], state="failed")
    recovered = api.post(f"/api/webhook-endpoints/{endpoint['id']}/recover/", json={"since": endpoint["created_at"]})
    assert recovered.status_code == 202 and recovered.json() == {"recovered": 1}

    # Then it is delivered, and the endpoint is healthy again
    until(lambda: deliveries_to(api, endpoint, job=job["id"], state="succeeded"), what="recovered delivery")
    [resent] = [r for r in broken.received if r.status == 200]
    assert resent.headers["webhook-id"] == failed["webhook_id"]
    health = endpoint_read(api, endpoint)["health"]
    assert health["consecutive_failures"] == 0 and health["last_success_at"] is not None


def test_the_operators_are_told_when_the_service_disables_an_endpoint_and_not_when_its_client_does(
    api: Api, make_receiver: Callable[..., Receiver], celery_worker_log: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given an endpoint whose receiver fails three times, its URL carrying a token
    broken = make_receiver(*[Reply(status=500, body=b"down")] * 3)
    endpoint = endpoint_create(api, f"{broken.url}hooks/s3cr3t-path?token=s3cr3t-query")
    before = value(scrape(api.base_url), "jobapi_webhook_endpoints_disabled_total", reason="failing")

    # When a job's event fails all its attempts, and the service disables the endpoint
    job = api.submit(HELLO, {"message": "lost"})
    api.wait(job["id"])
    until(lambda: not endpoint_read(api, endpoint)["enabled"], what="disabled")

    # Then the worker logs one warning naming the client, the endpoint, the receiver's host
    # (never its path or query) and the reason, and the counter went up by one
    [line] = until(lambda: worker_log_lines(celery_worker_log, "webhook endpoint disabled", f"endpoint_id={endpoint['id']}"),
                   what="the worker's line")
    assert line["level"] == "warning"
    assert (line["client"], line["receiver"], line["reason"]) == (str(api.client.pk), "127.0.0.1", "failing")
    assert "3 attempts in a row failed" in line["detail"]
    assert not any("s3cr3t" in text for text in line.values())
    after = value(scrape(api.base_url), "jobapi_webhook_endpoints_disabled_total", reason="failing")
    assert after == before + 1

    # When a client disables an endpoint itself (through the API, served in this process),
    # neither a line nor a count
    other = endpoint_create(api, make_receiver().url)
    with caplog.at_level(logging.WARNING):
        disabled = api.request("PATCH", f"/api/webhook-endpoints/{other['id']}/", json={"enabled": False})
    assert disabled.status_code == 200, disabled.text
    assert "webhook endpoint disabled" not in caplog.text
    assert value(scrape(api.base_url), "jobapi_webhook_endpoints_disabled_total", reason="failing") == after


def test_a_disabled_endpoints_pending_deliveries_are_held_then_resumed(
    api: Api, make_receiver: Callable[..., Receiver]
) -> None:
    # Given a delivery waiting for its second attempt (the receiver failed the first)
    flaky = make_receiver(Reply(status=503, body=b"busy"))
    endpoint = endpoint_create(api, flaky.url)
    job = api.submit(HELLO, {"message": "held"})
    api.wait(job["id"])
    flaky.wait_for(1)

    # When its client disables the endpoint before that attempt is due
    disabled = api.request("PATCH", f"/api/webhook-endpoints/{endpoint['id']}/", json={"enabled": False})
    assert disabled.status_code == 200 and disabled.json()["disabled_reason"] == "client"

    # Then the delivery is held, and no attempt goes while it is
    [held] = until(lambda: deliveries_to(api, endpoint, state="endpoint_disabled"), what="held")
    time.sleep(1.5)  # past the retry schedule's next step (1 s)
    assert len(flaky.received) == 1

    # When the endpoint is enabled again, the held delivery goes, and succeeds
    assert api.request("PATCH", f"/api/webhook-endpoints/{endpoint['id']}/", json={"enabled": True}).status_code == 200
    [sent] = until(lambda: deliveries_to(api, endpoint, state="succeeded"), what="resumed")
    assert sent["id"] == held["id"] and [a["status_code"] for a in sent["attempts"]] == [503, 200]


def test_a_test_event_reaches_the_endpoint_signed_with_its_secret(api: Api, receiver: Receiver) -> None:
    endpoint = endpoint_create(api, receiver.url, event_types=["job.succeeded"])

    response = api.post(f"/api/webhook-endpoints/{endpoint['id']}/test/")

    assert response.status_code == 202, response.text
    [received] = receiver.wait_for(1)
    event = Webhook(endpoint_secret(api, endpoint)).verify(received.body, received.headers)
    assert event["type"] == "webhook.test" and event["data"]["endpoint_id"] == endpoint["id"]
    until(lambda: deliveries_to(api, endpoint, state="succeeded"), what="the test delivery logged")


def test_a_test_event_reaches_a_disabled_endpoint_which_stays_disabled(api: Api, receiver: Receiver) -> None:
    # Given an endpoint its client disabled (say, while it mends its receiver)
    endpoint = endpoint_create(api, receiver.url, enabled=False)

    # When the client sends it a test event, to try the receiver before enabling the endpoint
    response = api.post(f"/api/webhook-endpoints/{endpoint['id']}/test/")

    # Then the test event goes now (it was held until the endpoint was enabled), and the endpoint
    # stays disabled
    assert response.status_code == 202, response.text
    [received] = receiver.wait_for(1, timeout=10)
    assert Webhook(endpoint_secret(api, endpoint)).verify(received.body, received.headers)["type"] == "webhook.test"
    until(lambda: deliveries_to(api, endpoint, state="succeeded"), what="the test delivery logged")
    assert endpoint_read(api, endpoint)["enabled"] is False


def test_deleting_an_endpoint_stops_its_pending_deliveries(api: Api, make_receiver: Callable[..., Receiver]) -> None:
    # Given an endpoint whose receiver fails, with a delivery between its attempts
    failing = make_receiver(*[Reply(status=503, body=b"busy")] * 3)
    endpoint = endpoint_create(api, failing.url)
    job = api.submit(HELLO, {"message": "stop"})
    api.wait(job["id"])
    failing.wait_for(1)

    # When the client deletes the endpoint
    assert api.request("DELETE", f"/api/webhook-endpoints/{endpoint['id']}/").status_code == 204

    # Then its delivery is canceled and no attempt follows
    [delivery] = until(lambda: [d for d in wait_deliveries(api, job["id"], all_final)], what="canceled")
    assert delivery["state"] == "canceled"
    attempts_seen = len(failing.received)
    time.sleep(2.5)  # longer than the retry schedule's next step (1 s)
    assert len(failing.received) == attempts_seen


def test_recovering_again_never_sends_an_event_twice(api: Api, make_receiver: Callable[..., Receiver]) -> None:
    # Given an endpoint whose receiver failed a job's event for good (three attempts), enabled
    # again once it works
    broken = make_receiver(*[Reply(status=500, body=b"down")] * 3)
    endpoint = endpoint_create(api, broken.url)
    job = api.submit(HELLO, {"message": "lost once"})
    api.wait(job["id"])
    until(lambda: not endpoint_read(api, endpoint)["enabled"], what="disabled")
    enabled = api.request("PATCH", f"/api/webhook-endpoints/{endpoint['id']}/", json={"enabled": True})
    assert enabled.status_code == 200, enabled.text

    # When its client recovers what failed since it was made, twice (a retried click)
    def recover() -> int:
        response = api.post(f"/api/webhook-endpoints/{endpoint['id']}/recover/", json={"since": endpoint["created_at"]})
        assert response.status_code == 202, response.text
        return int(response.json()["recovered"])

    first, second = recover(), recover()
    until(lambda: deliveries_to(api, endpoint, job=job["id"], state="succeeded"), what="recovered delivery")

    # Then the event goes again once; and once delivered, a later recover finds nothing to send
    assert (first, second) == (1, 0)
    assert recover() == 0
    time.sleep(1)
    assert [r.status for r in broken.received] == [500, 500, 500, 200]
    assert len(deliveries_to(api, endpoint, job=job["id"])) == 2
    # And both are listed by their event's type
    assert len(deliveries_to(api, endpoint, job=job["id"], event_type="job.succeeded")) == 2


def test_raising_an_endpoints_rate_limit_applies_to_deliveries_already_spaced(api: Api, receiver: Receiver) -> None:
    # Given an endpoint paced at one delivery every 20 s, with three events spaced that far apart
    endpoint = endpoint_create(api, receiver.url, rate_limit_per_second=0.05)
    jobs = [api.submit(HELLO, {"message": str(n)}) for n in range(3)]
    for job in jobs:
        api.wait(job["id"])
    receiver.wait_for(1)

    # When its client raises the limit, and another event comes
    raised = api.request("PATCH", f"/api/webhook-endpoints/{endpoint['id']}/", json={"rate_limit_per_second": 100})
    assert raised.status_code == 200, raised.text
    api.wait(api.submit(HELLO, {"message": "after"})["id"])

    # Then the waiting ones, and the new one, go at the new pace: all within seconds, not a
    # minute
    received = receiver.wait_for(4, timeout=12)
    assert len({r.headers["webhook-id"] for r in received}) == 4
