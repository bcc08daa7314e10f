"""One client's concurrent writes that check before they write: two endpoint creations at the
cap, two rotations of one secret. Each test holds the rows the requests need from a connection of
its own, so that both requests are inside their transaction at once, then lets them go."""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from tests.conftest import Api
from tests.locks import rows_held

pytestmark = pytest.mark.usefixtures("two_turns")

RECEIVER = "http://127.0.0.1:9/hooks"


def test_two_creations_at_the_endpoint_cap_make_one_endpoint(make_api: Callable[..., Api], settings: Any) -> None:
    # Given a client one endpoint under the cap
    settings.WEBHOOK_MAX_ENDPOINTS_PER_CLIENT = 2
    api = make_api()
    assert api.post("/api/webhook-endpoints/", json={"url": RECEIVER}).status_code == 201

    # When two creations run at once (both inside their transaction before either writes)
    def create() -> requests.Response:
        return api.post("/api/webhook-endpoints/", json={"url": RECEIVER})

    with ThreadPoolExecutor(2) as pool:
        with rows_held(f"SELECT 1 FROM core_client WHERE id = '{api.client.pk}' FOR UPDATE") as blocked:
            futures = [pool.submit(create), pool.submit(create)]
            blocked(2)
        responses = sorted(future.result(timeout=30).status_code for future in futures)

    # Then one is made and the other refused: the client has its cap, not one more
    assert responses == [201, 409]
    assert len(api.get("/api/webhook-endpoints/").json()["results"]) == 2


def test_two_rotations_at_once_both_answer_and_leave_one_current_secret(make_api: Callable[..., Api]) -> None:
    # Given a client with its signing secret
    api = make_api()
    first = api.get("/api/webhook-secret/").json()["secret"]

    # When two rotations run at once
    def rotate() -> requests.Response:
        return api.post("/api/webhook-secret/rotate/", json={})

    with ThreadPoolExecutor(2) as pool:
        with rows_held(
            f"SELECT 1 FROM core_client WHERE id = '{api.client.pk}' FOR UPDATE",
            f"SELECT 1 FROM webhooks_signingsecret WHERE owner_id = '{api.client.pk}' FOR UPDATE",
        ) as blocked:
            futures = [pool.submit(rotate), pool.submit(rotate)]
            blocked(2)
        responses = [future.result(timeout=30) for future in futures]

    # Then both answer with a new secret, and the client has one current secret: the later one
    assert [response.status_code for response in responses] == [200, 200], [r.text for r in responses]
    made = {response.json()["secret"] for response in responses}
    assert len(made) == 2 and first not in made
    assert api.get("/api/webhook-secret/").json()["secret"] in made


def test_the_clients_lock_does_not_hold_up_its_submissions(make_api: Callable[..., Api]) -> None:
    # Given a client whose row is locked as an endpoint creation locks it
    api = make_api()
    with rows_held(f"SELECT 1 FROM core_client WHERE id = '{api.client.pk}' FOR NO KEY UPDATE"):
        # Then its job is still accepted (its row's foreign key needs only a key-share lock)
        response = api.post("/api/jobs/", json={"job_name": "api.tasks.hello_world", "payload": {}}, timeout=5)
        assert response.status_code == 202, response.text
