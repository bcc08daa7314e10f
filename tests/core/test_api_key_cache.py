"""Key checks remembered per process (API_KEY_CACHE_SECONDS) never outlive a revocation, and past
the cap on how many a process remembers, the least recently used is the one forgotten."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import Client as DjangoClient
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core import auth
from core.auth import api_key_digest
from core.models import ApiKey, Client
from core.services import (
    api_key_create,
    api_key_delete,
    api_key_revoke,
    client_create,
    client_delete,
)
from jobs.models import Job
from tests.conftest import Api
from webhooks.models import Endpoint, SigningSecret


@pytest.fixture
def key(db: Any) -> str:
    return api_key_create(client=client_create(name="cached"))


def _status(key: str) -> int:
    return DjangoClient(HTTP_AUTHORIZATION=f"Bearer {key}").get("/api/jobs/").status_code


def test_a_key_revoked_in_this_process_is_refused_at_once(key: str) -> None:
    assert _status(key) == 200  # remembered now

    api_key_revoke(api_key=ApiKey.objects.get())

    assert _status(key) == 401


def test_a_key_revoked_elsewhere_is_refused_once_the_cache_time_has_passed(
    key: str, settings: Any
) -> None:
    settings.API_KEY_CACHE_SECONDS = 0.2
    assert _status(key) == 200
    # Another process revoked it: this one was not told.
    ApiKey.objects.update(revoked_at=timezone.now())

    time.sleep(0.3)

    assert _status(key) == 401


def test_a_refused_key_is_not_remembered(db: Any) -> None:
    # Given a key that does not exist yet is refused
    key = "jk_created-after-it-was-tried"
    assert _status(key) == 401

    # when it is created, it works at once
    ApiKey.objects.create(client=client_create(name="later"), digest=api_key_digest(key), prefix=key[:12])

    assert _status(key) == 200


def test_a_key_deleted_in_this_process_is_refused_at_once_as_a_revoked_one_is(transactional_db: Any) -> None:
    # Given two clients whose keys this process remembers
    gone_client = client_create(name="deleted client")
    gone_key = api_key_create(client=gone_client)
    deleted_key = api_key_create(client=client_create(name="deleted key"))
    assert _status(gone_key) == _status(deleted_key) == 200

    # When an operator deletes one client (with its keys and jobs), and the other's key
    client_delete(client=gone_client)
    api_key_delete(api_key=ApiKey.objects.get(client__name="deleted key"))

    # Then neither key is taken any more: a deleted client's key answered 200 to reads and 500
    # to a submission (its job's owner is gone) until the cache time had passed
    assert _status(gone_key) == _status(deleted_key) == 401
    submit = DjangoClient(HTTP_AUTHORIZATION=f"Bearer {gone_key}").post(
        "/api/jobs/", data={"job_name": "api.tasks.hello_world"}, content_type="application/json"
    )
    assert submit.status_code == 401


def _key_queries(key: str) -> int:
    """How many times a request with `key` looked a key up in the database."""
    with CaptureQueriesContext(connection) as queries:
        assert _status(key) == 200
    return sum("core_apikey" in q["sql"] for q in queries)


def test_past_the_cap_a_key_in_use_is_kept_and_an_idle_one_forgotten(
    db: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a process that remembers 3 keys, a key checked then left idle, and one in use since
    settings.API_KEY_CACHE_SECONDS = 60
    monkeypatch.setattr(auth, "_CHECKED_MAX_ENTRIES", 3)
    hot, idle, *new = (api_key_create(client=client_create(name=f"lru-{n}")) for n in range(4))
    assert _key_queries(hot) == 1
    assert _key_queries(idle) == 1
    assert _key_queries(hot) == 0  # remembered

    # When two more keys are checked
    for key in new:
        assert _key_queries(key) == 1

    # Then the key in use is still remembered (it was checked first, and used last), and the
    # idle one is looked up again
    assert _key_queries(hot) == 0
    assert _key_queries(idle) == 1


@pytest.mark.parametrize(("path", "body"), [
    ("/api/jobs/", {"job_name": "api.tasks.hello_world"}),
    ("/api/jobs/batch/", {"jobs": [{"job_name": "api.tasks.hello_world"}]}),
    ("/api/job/", {"job_name": "api.tasks.hello_world"}),
])
def test_a_client_deleted_by_another_process_is_an_unknown_key_at_its_next_submission(
    make_api: Callable[..., Api], path: str, body: dict[str, Any]
) -> None:
    # Given a key this API process remembers (API_KEY_CACHE_SECONDS), and its client deleted by
    # another process (the admin's), which could not make this one forget the key
    api = make_api()
    assert api.get("/api/jobs/").status_code == 200
    Client.objects.filter(pk=api.client.pk).delete()

    # When the key submits a job
    response = api.post(path, json=body)

    # Then it is refused as an unknown key, as it would be once the cache time had passed (it was
    # a 500: the job's owner is gone), and forgotten: its next request is looked up again
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "authentication_failed"
    assert api.get("/api/jobs/").status_code == 401
    assert not Job.objects.exists()


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/api/webhook-endpoints/", {"url": "http://127.0.0.1:9/hooks"}),
    ("GET", "/api/webhook-secret/", None),  # made on first use
    ("POST", "/api/webhook-secret/rotate/", {}),
    ("GET", "/api/limits/", None),  # read off its counts' row, deleted with it
])
def test_a_client_deleted_by_another_process_is_an_unknown_key_at_its_other_writes(
    make_api: Callable[..., Api], method: str, path: str, body: dict[str, Any] | None
) -> None:
    # Given a key this API process remembers, and its client deleted by another process
    api = make_api()
    assert api.get("/api/jobs/").status_code == 200
    Client.objects.filter(pk=api.client.pk).delete()

    # When the key makes an endpoint, or its secret, or reads its limits
    response = api.request(method, path, json=body)

    # Then it is refused as an unknown key (it was a 500: the row's owner is gone), and forgotten
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "authentication_failed"
    assert api.get("/api/jobs/").status_code == 401
    assert not Endpoint.objects.exists() and not SigningSecret.objects.exists()
