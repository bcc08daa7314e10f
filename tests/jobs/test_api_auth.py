"""Every API call is authenticated, and every object is visible only to its owner."""
from __future__ import annotations

from collections.abc import Callable

import pytest

from core.models import ApiKey
from core.services import api_key_revoke
from tests.conftest import Api

PROTECTED = [
    ("GET", "/api/jobs/"),
    ("POST", "/api/jobs/"),
    ("GET", "/api/jobs/00000000-0000-0000-0000-000000000000/"),
    ("POST", "/api/jobs/00000000-0000-0000-0000-000000000000/cancel/"),
    ("GET", "/api/job-types/"),
    ("GET", "/api/results/"),
    ("GET", "/api/results/1/"),
    ("GET", "/api/job/?job_id=00000000-0000-0000-0000-000000000000"),
    ("POST", "/api/job/"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_no_key_is_401(anonymous: Api, method: str, path: str) -> None:
    response = anonymous.request(method, path, json={"job_name": "api.tasks.hello_world"})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("header", ["Bearer wrong-key", "Bearer ", "Basic dXNlcjpwYXNz", "jak_abc"])
def test_a_wrong_key_is_401(anonymous: Api, header: str) -> None:
    response = anonymous.get("/api/jobs/", headers={"Authorization": header})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


def test_a_revoked_key_is_401(make_api: Callable[..., Api]) -> None:
    api = make_api()
    assert api.get("/api/jobs/").status_code == 200

    api_key_revoke(api_key=ApiKey.objects.get(client=api.client))

    assert api.get("/api/jobs/").status_code == 401


def test_health_checks_need_no_key(anonymous: Api) -> None:
    assert anonymous.get("/healthz").json() == {"status": "ok"}
    ready = anonymous.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_another_owners_job_and_results_are_404(make_api: Callable[..., Api], celery_worker: str) -> None:
    alice, bob = make_api("alice"), make_api("bob")
    job = alice.submit("api.tasks.save_task_result_test_task", {"secret": "alice's"})
    alice.wait(job["id"])
    [result] = alice.get("/api/results/").json()["results"]

    assert bob.get(f"/api/jobs/{job['id']}/").status_code == 404
    assert bob.post(f"/api/jobs/{job['id']}/cancel/").status_code == 404
    assert bob.get(f"/api/job/?job_id={job['id']}").status_code == 404
    assert bob.get(f"/api/results/{result['id']}/").status_code == 404
    assert bob.get("/api/jobs/").json()["results"] == []
    assert bob.get("/api/results/").json()["results"] == []
    assert alice.get(f"/api/jobs/{job['id']}/").status_code == 200


def test_two_keys_of_one_client_see_the_same_jobs(make_api: Callable[..., Api]) -> None:
    from core.services import api_key_create

    first = make_api()
    second = Api(first.base_url, api_key_create(client=first.client), first.client)
    job = first.submit("api.tasks.hello_world")

    assert second.get(f"/api/jobs/{job['id']}/").status_code == 200
