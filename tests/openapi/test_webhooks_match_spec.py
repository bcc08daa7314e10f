"""Real webhook deliveries match the spec's `webhooks` section: bodies, headers, signature.

A receiver written from the spec alone validates the body against the documented schema, reads
the three documented headers and checks the signature with the documented secret.
"""
from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from standardwebhooks import Webhook

from examples.receiver import Receiver
from tests.conftest import Api


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
        event = Webhook(secret).verify(delivery.body, delivery.headers)
        operation = committed_spec["webhooks"][event["type"]]["post"]
        errors = list(_body_validator(committed_spec, event["type"]).iter_errors(event))
        assert errors == [], [e.message for e in errors]
        for header in operation["parameters"]:
            value = delivery.headers[header["name"]]
            pattern = header["schema"].get("pattern")
            assert pattern is None or re.search(pattern, value), (header["name"], value)
        assert delivery.headers["content-type"] == "application/json"
    assert {r.event["type"] for r in received} >= {"job.started", "job.progress", "job.succeeded"}
