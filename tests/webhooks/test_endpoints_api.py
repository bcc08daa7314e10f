"""Webhook endpoints as a resource: create, list, read, change, delete, their secret; every rule
checked at the edge, and another client's endpoint a 404 everywhere."""
from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import Client as DjangoClient

from core.services import api_key_create, client_create
from tests.conftest import Api

RECEIVER = "http://127.0.0.1:9/hooks"


def create(api: Api, **body: Any) -> dict[str, Any]:
    response = api.post("/api/webhook-endpoints/", json={"url": RECEIVER, **body})
    assert response.status_code == 201, response.text
    return response.json()


def test_an_endpoint_is_created_listed_changed_and_deleted(make_api: Callable[..., Api]) -> None:
    api = make_api()

    # Created with the defaults: the three final events, enabled, healthy
    endpoint = create(api, description="orders", headers={"X-Team": "billing"})
    assert endpoint["event_types"] == ["job.canceled", "job.failed", "job.succeeded"]
    assert endpoint["enabled"] is True and endpoint["disabled_reason"] is None and endpoint["disabled_at"] is None
    assert endpoint["health"] == {"succeeded_24h": 0, "failed_24h": 0, "last_success_at": None,
                                  "last_failure_at": None, "consecutive_failures": 0, "disabled_reason": None}
    assert "secret" not in endpoint

    # Listed in the envelope, read alone
    listed = api.get("/api/webhook-endpoints/").json()
    assert [e["id"] for e in listed["results"]] == [endpoint["id"]] and listed["next"] is None
    assert api.get(f"/api/webhook-endpoints/{endpoint['id']}/").json()["description"] == "orders"

    # Changed: subscriptions, disabled by the client, a pace
    changed = api.request("PATCH", f"/api/webhook-endpoints/{endpoint['id']}/",
                          json={"event_types": ["job.started", "webhook.test"], "enabled": False,
                                "rate_limit_per_second": 2})
    assert changed.status_code == 200, changed.text
    assert changed.json()["event_types"] == ["job.started", "webhook.test"]
    assert (changed.json()["enabled"], changed.json()["disabled_reason"]) == (False, "client")
    assert changed.json()["disabled_at"] > endpoint["created_at"]
    enabled = api.request("PATCH", f"/api/webhook-endpoints/{endpoint['id']}/", json={"enabled": True}).json()
    assert (enabled["enabled"], enabled["disabled_reason"], enabled["disabled_at"], enabled["rate_limit_per_second"]) == (
        True, None, None, 2.0)

    # Deleted
    assert api.request("DELETE", f"/api/webhook-endpoints/{endpoint['id']}/").status_code == 204
    assert api.get(f"/api/webhook-endpoints/{endpoint['id']}/").status_code == 404


def test_each_endpoint_has_its_own_secret_rotated_like_the_clients(make_api: Callable[..., Api]) -> None:
    api = make_api()
    first, second = create(api), create(api)

    secret = api.get(f"/api/webhook-endpoints/{first['id']}/secret/").json()["secret"]
    other = api.get(f"/api/webhook-endpoints/{second['id']}/secret/").json()["secret"]
    own = api.get("/api/webhook-secret/").json()["secret"]
    rotated = api.post(f"/api/webhook-endpoints/{first['id']}/secret/rotate/", json={"expire_previous_now": True})

    assert len({secret, other, own}) == 3 and secret.startswith("whsec_")
    assert rotated.status_code == 200 and rotated.json()["secret"] not in (secret, other, own)
    assert api.get(f"/api/webhook-endpoints/{first['id']}/secret/").json()["secret"] == rotated.json()["secret"]
    assert api.get("/api/webhook-secret/").json()["secret"] == own


def test_the_rules_are_checked_at_the_edge(make_api: Callable[..., Api], settings: Any) -> None:
    api = make_api()
    bad_bodies = [
        {"url": "http://10.0.0.1/hooks"},  # a private address (only loopback is allowed in tests)
        {"url": "ftp://example.com/"},
        {"url": RECEIVER, "event_types": ["job.exploded"]},
        {"url": RECEIVER, "event_types": []},
        {"url": RECEIVER, "headers": {f"X-{n}": "v" for n in range(11)}},
        {"url": RECEIVER, "headers": {"Webhook-Signature": "forged"}},
        {"url": RECEIVER, "headers": {"Content-Type": "text/plain"}},
        {"url": RECEIVER, "headers": {"Host": "elsewhere"}},
        {"url": RECEIVER, "headers": {"Transfer-Encoding": "chunked"}},
        {"url": RECEIVER, "headers": {"X-Bad Name": "v"}},
        {"url": RECEIVER, "headers": {"X-Split": "a\r\nInjected: yes"}},
        {"url": RECEIVER, "headers": {"X-Number": 5}},
        {"url": RECEIVER, "headers": {"X-Padded": " token"}},  # every send would fail: refused now
        {"url": RECEIVER, "headers": {"Expect": "100-continue"}},  # the body goes at once, whatever it says
        {"url": RECEIVER, "headers": {"X-Team": "a", "x-team": "b"}},  # one name: only one would go
        {"url": RECEIVER, "rate_limit_per_second": 0},
        # Python's float() reads these as numbers: true was a pace of 1 a second
        {"url": RECEIVER, "rate_limit_per_second": True},
        {"url": RECEIVER, "rate_limit_per_second": "5"},
        {"url": RECEIVER, "rate_limit_per_second": "١٠"},
        {"url": RECEIVER, "rate_limit_per_second": "1_0"},
        {"url": RECEIVER, "enabled": "maybe"},
    ]
    for body in bad_bodies:
        response = api.post("/api/webhook-endpoints/", json=body)
        assert response.status_code == 400, (body, response.text)

    settings.WEBHOOK_MAX_ENDPOINTS_PER_CLIENT = 2
    create(api)
    create(api)
    too_many = api.post("/api/webhook-endpoints/", json={"url": RECEIVER})
    assert too_many.status_code == 409 and too_many.json()["error"]["code"] == "too_many_endpoints"


def test_too_many_headers_are_refused_for_their_number_before_each_is_checked(make_api: Callable[..., Api]) -> None:
    # Given more headers than an endpoint may have, each of them bad too
    api = make_api()
    headers = {f"X-{n}": "v" * 1001 for n in range(11)}

    response = api.post("/api/webhook-endpoints/", json={"url": RECEIVER, "headers": headers})

    # Then they are refused for their number, none of them checked: a 1 MiB body holds 55,000
    # headers, whose checks one by one held the process's request turn 243 ms (a create: 60 ms)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"] == {"headers": ["At most 10 headers."]}


def test_another_clients_endpoint_is_a_404_everywhere(make_api: Callable[..., Api]) -> None:
    owner, stranger = make_api(), make_api()
    endpoint = create(owner)
    base = f"/api/webhook-endpoints/{endpoint['id']}/"

    answers = [
        stranger.get(base), stranger.request("PATCH", base, json={"enabled": False}),
        stranger.request("DELETE", base), stranger.get(base + "secret/"), stranger.post(base + "secret/rotate/"),
        stranger.post(base + "test/"), stranger.post(base + "recover/", json={"since": "2026-01-01T00:00:00Z"}),
    ]

    assert [a.status_code for a in answers] == [404] * len(answers)
    assert stranger.get("/api/webhook-endpoints/").json()["results"] == []
    assert stranger.get(f"/api/deliveries/?endpoint={endpoint['id']}").json()["results"] == []
    assert owner.get(base).json()["enabled"] is True  # untouched


def test_the_deliveries_by_event_type_are_the_clients_own(make_api: Callable[..., Api]) -> None:
    # Given two clients, each with a test event sent to its endpoint
    owner, stranger = make_api(), make_api()
    for api in (owner, stranger):
        assert api.post(f"/api/webhook-endpoints/{create(api)['id']}/test/").status_code == 202

    # When the owner lists its deliveries by event type
    tests = owner.get("/api/deliveries/?event_type=webhook.test").json()["results"]
    succeeded = owner.get("/api/deliveries/?event_type=job.succeeded").json()["results"]

    # Then it gets its own test delivery, none of the stranger's, and nothing of a type it has none of
    assert [d["event_type"] for d in tests] == ["webhook.test"]
    assert succeeded == []


@pytest.mark.django_db
def test_a_filter_on_another_clients_endpoint_reads_none_of_its_deliveries() -> None:
    # Given a client's endpoint with a delivery, and another client
    owner, stranger = client_create(name="owner"), client_create(name="stranger")
    endpoint_id = uuid.uuid4()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO webhooks_endpoint (id, url, description, event_types, enabled, disabled_reason, headers,
                                           consecutive_failures, last_error, created_at, owner_id, schedule_version)
            VALUES (%(endpoint)s, %(url)s, '', '[]', true, '', '{}', 0, '', now(), %(owner)s, 0);
            WITH event AS (
                INSERT INTO webhooks_event (message_id, owner_id, subject_id, event_type, body, created_at)
                VALUES ('msg_1', %(owner)s, gen_random_uuid(), 'job.succeeded', '\\x7b7d', now()) RETURNING *
            )
            INSERT INTO webhooks_delivery (event_id, owner_id, subject_id, url, state, redelivery, attempt_count,
                                           created_at, endpoint_id, authority)
            SELECT id, owner_id, subject_id, %(url)s, 'succeeded', false, 1, created_at, %(endpoint)s, ''
            FROM event
            """,
            {"endpoint": endpoint_id, "url": RECEIVER, "owner": owner.pk},
        )
    as_owner, as_stranger = (DjangoClient(HTTP_AUTHORIZATION=f"Bearer {api_key_create(client=client)}")
                             for client in (owner, stranger))

    # When the stranger lists the deliveries of that endpoint, and its owner does
    issued: list[str] = []

    def recorded(execute: Callable[..., Any], sql: str, *args: Any) -> Any:
        issued.append(sql)
        return execute(sql, *args)

    with connection.execute_wrapper(recorded):
        theirs = as_stranger.get(f"/api/deliveries/?endpoint={endpoint_id}")
    ours = as_owner.get(f"/api/deliveries/?endpoint={endpoint_id}")

    # Then the stranger has none, and none of the endpoint's deliveries were read to tell it so:
    # PostgreSQL walked every one of them (all another client's) to find none of the asker's
    assert theirs.status_code == 200 and theirs.json()["results"] == [], theirs.content
    assert issued and [sql for sql in issued if "webhooks_delivery" in sql] == [], issued
    # And the owner has its own
    assert [delivery["endpoint"] for delivery in ours.json()["results"]] == [str(endpoint_id)], ours.content
