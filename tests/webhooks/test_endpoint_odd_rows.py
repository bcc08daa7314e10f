"""An endpoint whose stored `event_types` or `headers` is not the shape the code writes (written
by hand in SQL, or by an older version): its client's submissions, its events and its deliveries
go on, and every read shows the documented shape. A number in `event_types` answered 500 to every
submission of its client (each asks whether the client has endpoints); `headers` that were no
object failed every delivery to the endpoint, and its admin page."""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import Client as DjangoClient
from django.urls import reverse

from examples.receiver import Receiver
from tests.conftest import Api
from tests.webhooks.conftest import HELLO, all_final, wait_deliveries

DEFAULT_EVENTS = ["job.canceled", "job.failed", "job.succeeded"]


def _stored(endpoint_id: str, column: str, value: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE webhooks_endpoint SET {column} = %s::jsonb WHERE id = %s",
                       [json.dumps(value), endpoint_id])


@pytest.mark.parametrize(("stored", "shown"), [
    (5, DEFAULT_EVENTS),
    (None, DEFAULT_EVENTS),
    ({"job.succeeded": True}, DEFAULT_EVENTS),
    (["job.exploded", 7], DEFAULT_EVENTS),
    ("job.succeeded", ["job.succeeded"]),
    (["job.succeeded", None, "job.nope", "job.started", "job.succeeded"], ["job.started", "job.succeeded"]),
], ids=lambda v: json.dumps(v)[:40])
def test_an_endpoint_with_odd_event_types_gets_the_events_it_shows(
    api: Api, make_receiver: Callable[..., Receiver], stored: Any, shown: list[str]
) -> None:
    # Given an endpoint whose event_types column holds what the code never writes
    receiver = make_receiver()
    endpoint = api.post("/api/webhook-endpoints/", json={"url": receiver.url}).json()
    _stored(endpoint["id"], "event_types", stored)

    # When its client reads it and lists its endpoints, and submits a job that runs to the end
    read = api.get(f"/api/webhook-endpoints/{endpoint['id']}/")
    listed = api.get("/api/webhook-endpoints/")
    submitted = api.post("/api/jobs/", json={"job_name": HELLO, "payload": {}})

    # Then each answers, the event types shown as a sorted list of known ones
    assert read.status_code == 200 and read.json()["event_types"] == shown, read.text
    assert listed.status_code == 200 and listed.json()["results"][0]["event_types"] == shown, listed.text
    assert submitted.status_code == 202, submitted.text
    # And the endpoint gets those of the job's events it shows, no more
    job = api.wait(submitted.json()["id"])
    assert job["status"] == "SUCCESS", job
    sent = [event_type for event_type in shown if event_type in ("job.started", "job.succeeded")]
    deliveries = wait_deliveries(api, job["id"], lambda ds: len(ds) == len(sent) and all_final(ds))
    assert sorted(d["event_type"] for d in deliveries) == sent, deliveries
    assert sorted(r.event["type"] for r in receiver.wait_for(len(sent))) == sent


def test_an_endpoint_with_odd_headers_is_delivered_to_with_those_that_are_headers(
    api: Api, make_receiver: Callable[..., Receiver], admin_client: DjangoClient
) -> None:
    # Given two endpoints whose headers columns hold what the code never writes: a list, and an
    # object some of whose values are no strings
    listed, mixed = make_receiver(), make_receiver()
    as_list = api.post("/api/webhook-endpoints/", json={"url": listed.url, "headers": {"X-Team": "a"}}).json()
    as_mixed = api.post("/api/webhook-endpoints/", json={"url": mixed.url, "headers": {"X-Team": "b"}}).json()
    _stored(as_list["id"], "headers", ["X-Team"])
    _stored(as_mixed["id"], "headers", {"X-Team": "b", "X-Count": 5, "X-None": None})

    # When a job of their client ends
    job = api.wait(api.submit(HELLO)["id"])
    deliveries = wait_deliveries(api, job["id"], lambda ds: len(ds) == 2 and all_final(ds))

    # Then both were delivered, with the headers that are headers
    assert {d["state"] for d in deliveries} == {"succeeded"}, deliveries
    [to_list], [to_mixed] = listed.wait_for(1), mixed.wait_for(1)
    assert "x-team" not in to_list.headers
    assert to_mixed.headers["x-team"] == "b" and "x-count" not in to_mixed.headers
    # And the API and the admin show them so
    assert api.get(f"/api/webhook-endpoints/{as_list['id']}/").json()["headers"] == {}
    assert api.get(f"/api/webhook-endpoints/{as_mixed['id']}/").json()["headers"] == {"X-Team": "b"}
    page = admin_client.get(reverse("admin:webhooks_endpoint_change", args=[as_list["id"]]))
    assert page.status_code == 200
