"""Redelivery (same webhook-id, same bytes) and secret rotation (both signatures verify)."""
from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db.models import QuerySet
from django.utils import timezone
from standardwebhooks import Webhook, WebhookVerificationError

from examples.receiver import Receiver, Reply
from tests.conftest import Api
from tests.webhooks.conftest import (
    HELLO,
    LONG,
    all_final,
    deliveries_of,
    secret_of,
    wait_deliveries,
)
from webhooks import sealing, tasks
from webhooks.models import SigningSecret


def stored(secret: str) -> QuerySet[SigningSecret]:
    """The row of `secret`: stored sealed, found by opening each."""
    return SigningSecret.objects.filter(
        pk__in=[row.pk for row in SigningSecret.objects.all() if sealing.unseal(row.secret) == secret]
    )


def test_redeliver_sends_the_final_event_again_with_the_same_id_and_bytes(
    api: Api, receiver: Receiver
) -> None:
    # Given a job whose webhook was delivered
    secret = secret_of(api)
    created = api.submit(HELLO, callback_url=receiver.url)
    wait_deliveries(api, created["id"], all_final)
    [first] = receiver.wait_for(1)

    # When the client asks for it again
    response = api.post(f"/api/jobs/{created['id']}/redeliver/")

    # Then the same event arrives again: same webhook-id, same body, a fresh valid signature
    assert response.status_code == 202, response.text
    assert response.json()["redelivery"] is True
    assert response.json()["webhook_id"] == first.headers["webhook-id"]
    first, second = receiver.wait_for(2)
    assert second.headers["webhook-id"] == first.headers["webhook-id"]
    assert second.body == first.body
    Webhook(secret).verify(second.body, second.headers)
    deliveries = wait_deliveries(api, created["id"], lambda ds: len(ds) == 2 and all_final(ds))
    assert sorted(d["redelivery"] for d in deliveries) == [False, True]
    assert {d["state"] for d in deliveries} == {"succeeded"}
    # And the client's log by the event's type lists both
    by_type = api.get("/api/deliveries/", params={"job": created["id"], "event_type": "job.succeeded"})
    assert sorted(d["redelivery"] for d in by_type.json()["results"]) == [False, True], by_type.text


def test_redeliver_waits_for_the_event_delivery_in_progress(
    api: Api, make_receiver: Callable[..., Receiver]
) -> None:
    # Given a final event whose delivery waits to retry (the receiver asked for 3 s)
    receiver = make_receiver(Reply(status=503, headers={"Retry-After": "3"}))
    created = api.submit(HELLO, callback_url=receiver.url)
    receiver.wait_for(1)

    # When the client asks for a redelivery meanwhile, it is told to wait
    response = api.post(f"/api/jobs/{created['id']}/redeliver/")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "delivery_in_progress"
    # And once that delivery has ended, a redelivery goes ahead
    wait_deliveries(api, created["id"], all_final)
    assert api.post(f"/api/jobs/{created['id']}/redeliver/").status_code == 202
    assert len(receiver.wait_for(3)) == 3


def test_redeliver_needs_a_final_event(api: Api, receiver: Receiver) -> None:
    running = api.submit(LONG, {"duration": 30}, callback_url=receiver.url)
    api.wait(running["id"], until=lambda job: job["status"] == "STARTED")
    no_callback = api.submit(HELLO)
    api.wait(no_callback["id"])

    for job_id in (running["id"], no_callback["id"]):
        response = api.post(f"/api/jobs/{job_id}/redeliver/")
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "nothing_to_redeliver"
    api.post(f"/api/jobs/{running['id']}/cancel/")
    api.wait(running["id"])


def test_redeliver_sends_to_the_callback_url_only_never_to_an_endpoint_even_a_deleted_one(
    api: Api, make_receiver: Callable[..., Receiver]
) -> None:
    # Given an endpoint, a finished job without a callback_url (the endpoint's delivery alone)
    # and a finished job with one
    partner, callback = make_receiver(), make_receiver()
    created = api.post("/api/webhook-endpoints/", json={"url": partner.url, "event_types": ["job.succeeded"]})
    assert created.status_code == 201, created.text
    endpoint = created.json()
    no_callback = api.submit(HELLO)
    with_callback = api.submit(HELLO, callback_url=callback.url)
    wait_deliveries(api, no_callback["id"], lambda ds: len(ds) == 1 and all_final(ds))
    wait_deliveries(api, with_callback["id"], lambda ds: len(ds) == 2 and all_final(ds))

    # When the client asks for a redelivery of the first, before and after deleting the endpoint
    while_registered = api.post(f"/api/jobs/{no_callback['id']}/redeliver/")
    assert api.request("DELETE", f"/api/webhook-endpoints/{endpoint['id']}/").status_code == 204
    once_deleted = api.post(f"/api/jobs/{no_callback['id']}/redeliver/")

    # Then there is nothing to redeliver (the endpoint's deliveries go again by its recover):
    # no delivery to its URL without its secret, headers and state
    for response in (while_registered, once_deleted):
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == "nothing_to_redeliver"
    assert len(deliveries_of(api, no_callback["id"])) == 1
    # And the other job's final event goes again to its callback_url, not to the endpoint's URL
    again = api.post(f"/api/jobs/{with_callback['id']}/redeliver/")
    assert again.status_code == 202, again.text
    assert again.json()["url"] == callback.url
    assert len(callback.wait_for(2)) == 2
    assert len(partner.received) == 2


def test_delivery_endpoints_check_ownership(api: Api, make_api: object, receiver: Receiver) -> None:
    created = api.submit(HELLO, callback_url=receiver.url)
    api.wait(created["id"])
    other = make_api()  # type: ignore[operator]

    assert other.get(f"/api/jobs/{created['id']}/deliveries/").status_code == 404
    assert other.post(f"/api/jobs/{created['id']}/redeliver/").status_code == 404
    assert api.get(f"/api/jobs/{created['id']}/deliveries/").status_code == 200


def test_secret_is_stable_per_client_and_rotation_signs_with_both(
    api: Api, make_api: object, receiver: Receiver
) -> None:
    # Given a client's secret (another client has its own)
    old = secret_of(api)
    assert secret_of(api) == old
    assert secret_of(make_api()) != old  # type: ignore[operator]

    # When it rotates
    response = api.post("/api/webhook-secret/rotate/")
    assert response.status_code == 200
    new = response.json()["secret"]
    assert new.startswith("whsec_") and new != old
    assert secret_of(api) == new

    # Then deliveries carry both signatures, space-separated, and each secret verifies
    created = api.submit(HELLO, callback_url=receiver.url)
    [received] = receiver.wait_for(1)
    assert len(received.headers["webhook-signature"].split(" ")) == 2
    assert Webhook(new).verify(received.body, received.headers)["data"]["id"] == created["id"]
    assert Webhook(old).verify(received.body, received.headers)["data"]["id"] == created["id"]


def test_after_the_overlap_only_the_new_secret_signs(api: Api, receiver: Receiver) -> None:
    old = secret_of(api)
    new = api.post("/api/webhook-secret/rotate/").json()["secret"]
    # The overlap (24 h by default) has passed.
    stored(old).update(expires_at=timezone.now() - timedelta(seconds=1))

    api.submit(HELLO, callback_url=receiver.url)
    [received] = receiver.wait_for(1)

    assert len(received.headers["webhook-signature"].split(" ")) == 1
    Webhook(new).verify(received.body, received.headers)


def test_rotating_again_ends_the_previous_overlap_so_at_most_two_sign(api: Api, receiver: Receiver) -> None:
    # Given a secret rotated twice in a row
    first = secret_of(api)
    second = api.post("/api/webhook-secret/rotate/").json()["secret"]
    third = api.post("/api/webhook-secret/rotate/").json()["secret"]

    # When a delivery is signed
    api.submit(HELLO, callback_url=receiver.url)
    [received] = receiver.wait_for(1)

    # Then the current and the previous secret sign it, and the first no longer does
    assert len(received.headers["webhook-signature"].split(" ")) == 2
    Webhook(third).verify(received.body, received.headers)
    Webhook(second).verify(received.body, received.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(first).verify(received.body, received.headers)


def test_a_leaked_secret_is_expired_at_once(api: Api, receiver: Receiver) -> None:
    # Given a secret that leaked
    leaked = secret_of(api)

    # When the client rotates it with expire_previous_now
    response = api.post("/api/webhook-secret/rotate/", json={"expire_previous_now": True})
    new = response.json()["secret"]

    # Then only the new secret signs, and the expired one is pruned
    api.submit(HELLO, callback_url=receiver.url)
    [received] = receiver.wait_for(1)
    assert len(received.headers["webhook-signature"].split(" ")) == 1
    Webhook(new).verify(received.body, received.headers)
    assert tasks.webhooks_prune()["signing_secrets"] >= 1
    assert not stored(leaked).exists()
    assert api.post("/api/webhook-secret/rotate/", json={"expire_previous_now": "soon"}).status_code == 400


def test_deliveries_list_is_the_envelope_and_cheap(api: Api, receiver: Receiver) -> None:
    from django.db import connection
    from django.test import Client as DjangoClient
    from django.test.utils import CaptureQueriesContext

    created = api.submit(LONG, {"duration": 1}, callback_url=receiver.url,
                         webhook_events=["job.started", "job.succeeded"])
    wait_deliveries(api, created["id"], lambda ds: len(ds) == 2 and all_final(ds))

    # In this thread (not the live server's) so the queries can be counted.
    in_process = DjangoClient(headers={"Authorization": f"Bearer {api.key}"})
    with CaptureQueriesContext(connection) as queries:
        body = in_process.get(f"/api/jobs/{created['id']}/deliveries/").json()

    assert set(body) == {"results", "next", "previous"}
    assert [d["event_type"] for d in body["results"]] == ["job.succeeded", "job.started"]  # newest first
    # the API key (unless cached), the job, the page of deliveries (joined to their events) and
    # their attempts: a fixed few, whatever the number of deliveries
    assert len(queries) <= 4, [q["sql"] for q in queries.captured_queries]
    assert deliveries_of(api, created["id"]) == body["results"]
