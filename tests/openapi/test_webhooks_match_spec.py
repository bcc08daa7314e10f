"""Real webhook deliveries match the spec's `webhooks` section: bodies, headers, signature.

A receiver written from the spec alone validates the body against the documented schema, reads
the three documented headers and checks the signature with the documented secret.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from standardwebhooks import Webhook

from examples.receiver import Receiver, Reply
from tests.conftest import Api
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.openai_server import Reply as ModelReply
from tests.jobs.test_checklist import guidelines_for

CHECKLIST = "api.tasks.generate_checklist_from_guidelines"
HELLO = "api.tasks.hello_world"
LONG = "api.tasks.long_running_task"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """The project's example receiver, on a free loopback port."""
    with Receiver() as started:
        yield started


def _body_validator(spec: dict, event: str) -> Draft202012Validator:
    schema = spec["webhooks"][event]["post"]["requestBody"]["content"]["application/json"]["schema"]
    registry = Registry().with_resource(
        "urn:spec", Resource.from_contents(spec, default_specification=DRAFT202012)
    )
    return Draft202012Validator({"$ref": "urn:spec" + schema["$ref"]}, registry=registry)


def _assert_documented(spec: dict, delivery: Any, secret: str) -> dict:
    """The delivery's body is its event's documented schema, its headers the documented ones."""
    event = Webhook(secret).verify(delivery.body, delivery.headers)
    operation = spec["webhooks"][event["type"]]["post"]
    errors = list(_body_validator(spec, event["type"]).iter_errors(event))
    assert errors == [], (event["type"], [e.message for e in errors])
    for header in operation["parameters"]:
        value = delivery.headers[header["name"]]
        pattern = header["schema"].get("pattern")
        assert pattern is None or re.search(pattern, value), (header["name"], value)
    assert delivery.headers["content-type"] == "application/json"
    return event


def test_every_delivered_event_matches_its_documented_body_and_headers(
    api: Api, receiver: Receiver, committed_spec: dict
) -> None:
    # Given the secret, read through the documented operation, and a job sending every event
    secret = api.get("/api/webhook-secret/").json()["secret"]
    created = api.submit(
        "api.tasks.long_running_task",
        {"duration": 1, "message": "spec"},
        callback_url=receiver.url,
        webhook_events=["job.started", "job.progress", "job.succeeded"],
    )
    api.wait(created["id"])

    # When the deliveries arrive (started, at least one progress, succeeded)
    received = receiver.wait_for(3)
    while not any(r.event["type"] == "job.succeeded" for r in received):
        received = receiver.wait_for(len(received) + 1)

    # Then each is what the spec says
    for delivery in received:
        _assert_documented(committed_spec, delivery, secret)
    assert {r.event["type"] for r in received} >= {"job.started", "job.progress", "job.succeeded"}


def test_the_other_events_match_their_documented_bodies_and_headers(
    api: Api, committed_spec: dict, fake_openai: FakeOpenAI
) -> None:
    # Given a receiver for the jobs' callbacks, an endpoint that always fails and one told of it
    scenario = fake_openai.scenario()
    scenario.add(ModelReply.answer("not JSON"))
    secret = api.get("/api/webhook-secret/").json()["secret"]
    with Receiver() as called_back, Receiver(replies=[Reply(status=500)] * 3) as broken, Receiver() as watcher:
        failing = api.post("/api/webhook-endpoints/", json={"url": broken.url, "event_types": ["job.succeeded"]}).json()
        watching = api.post("/api/webhook-endpoints/",
                            json={"url": watcher.url, "event_types": ["endpoint.disabled", "webhook.test"]}).json()
        watching_secret = api.get(f"/api/webhook-endpoints/{watching['id']}/secret/").json()["secret"]

        # When a job fails, one is canceled, the watcher is sent a test event and the failing
        # endpoint is disabled (its three attempts at a job's success failed)
        api.submit(CHECKLIST, {"guidelines": guidelines_for(scenario)}, callback_url=called_back.url,
                   retry={"max_attempts": 1, "backoff_seconds": 1})
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        canceled = api.submit(LONG, {"duration": 30, "message": "m"}, callback_url=called_back.url, run_at=later)
        api.post(f"/api/jobs/{canceled['id']}/cancel/")
        api.post(f"/api/webhook-endpoints/{watching['id']}/test/")
        api.wait(api.submit(HELLO, {"message": "m"})["id"])
        callbacks = called_back.wait_for(2)
        told = watcher.wait_for(2)

    # Then each is what the spec says
    events = [_assert_documented(committed_spec, delivery, secret) for delivery in callbacks]
    events += [_assert_documented(committed_spec, delivery, watching_secret) for delivery in told]
    assert sorted(event["type"] for event in events) == [
        "endpoint.disabled", "job.canceled", "job.failed", "webhook.test"]
    assert [e["data"]["id"] for e in events if e["type"] == "endpoint.disabled"] == [failing["id"]]
