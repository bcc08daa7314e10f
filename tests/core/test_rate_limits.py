"""Every endpoint is rate limited per client, in its scope's budget (reads, writes, submissions,
sensitive writes), with 429 and Retry-After, and tells the client the budget left (the IETF
RateLimit-Policy and RateLimit fields); the admin's login per client address."""
from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
import requests

from tests.conftest import Api

BODY = {"job_name": "api.tasks.hello_world"}
# `RateLimit: "<scope>";r=<remaining>;t=<seconds>`, as the draft writes it.
RATE_LIMIT = re.compile(r'"(?P<scope>[a-z]+)";r=(?P<r>[0-9]+);t=(?P<t>[0-9]+)')


def budget(response: requests.Response) -> tuple[str, int, int]:
    """The scope, remaining and reset seconds the answer's RateLimit field says."""
    found = RATE_LIMIT.fullmatch(response.headers["RateLimit"])
    assert found is not None, response.headers["RateLimit"]
    return found["scope"], int(found["r"]), int(found["t"])


def test_reads_have_their_own_budget_per_client(make_api: Callable[..., Api], settings: Any) -> None:
    settings.API_READ_RATE_PER_MINUTE = 3
    api, other = make_api(), make_api()

    statuses = [api.get(path).status_code for path in ("/api/jobs/", "/api/job-types/", "/api/results/", "/api/jobs/")]
    limited = api.get("/api/webhook-secret/")

    assert statuses == [200, 200, 200, 429]
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limited"
    # The sliding-window estimate weighs the previous minute: a wait may run past this one.
    assert 0 < int(limited.headers["Retry-After"]) <= 120
    # Submissions and other clients are not touched.
    assert api.post("/api/jobs/", json={"job_name": "api.tasks.hello_world"}).status_code == 202
    assert other.get("/api/jobs/").status_code == 200


def test_sensitive_writes_are_limited_tightly(make_api: Callable[..., Api], settings: Any) -> None:
    settings.API_SENSITIVE_RATE_PER_MINUTE = 2
    api = make_api()

    statuses = [api.post("/api/webhook-secret/rotate/").status_code for _ in range(3)]

    assert statuses == [200, 200, 429]
    assert api.get("/api/webhook-secret/").status_code == 200  # reads are another budget


def test_other_writes_have_their_own_budget(make_api: Callable[..., Api], settings: Any) -> None:
    settings.API_WRITE_RATE_PER_MINUTE = 1
    api = make_api()
    first, second = (api.submit("api.tasks.hello_world")["id"] for _ in range(2))

    assert api.post(f"/api/jobs/{first}/cancel/").status_code in (202, 409)
    assert api.post(f"/api/jobs/{second}/cancel/").status_code == 429


def test_the_admin_login_is_throttled_per_address(live_server: Any, transactional_db: Any, settings: Any) -> None:
    settings.ADMIN_LOGIN_RATE_PER_MINUTE = 2
    store = redis.Redis.from_url(settings.CACHE_URL)  # other tests' logins, from the same address:
    for key in store.scan_iter(match="*rl:throttle:admin_login:127.0.0.1:*"):
        store.delete(key)
    session = requests.Session()
    url = f"{live_server.url}/admin/login/"
    token = session.get(url, timeout=10).cookies.get("csrftoken")
    form = {"username": "nobody", "password": "wrong", "csrfmiddlewaretoken": token}

    # With DEBUG off the CSRF cookie is Secure, which requests keeps from plain http (Chromium
    # sends it to loopback: tests/core/test_admin_browser.py): it goes by hand.
    headers = {"Referer": url, "Cookie": f"csrftoken={token}"}
    statuses = [session.post(url, data=form, headers=headers, timeout=10).status_code for _ in range(3)]

    assert statuses == [200, 200, 429]  # a wrong password answers the form again (200)
    assert session.get(url, timeout=10).status_code == 200  # looking at the form is not an attempt


def test_a_submit_and_a_poll_tell_the_budget_left_in_their_scope(make_api: Callable[..., Api], settings: Any) -> None:
    # Given 4 submissions and 5 reads a minute
    settings.API_SUBMIT_RATE_PER_MINUTE, settings.API_READ_RATE_PER_MINUTE = 4, 5
    api = make_api()

    # When a client submits twice and polls its job twice
    submits = [api.post("/api/jobs/", json=BODY) for _ in range(2)]
    polls = [api.get(f"/api/jobs/{submits[0].json()['id']}/") for _ in range(2)]

    # Then each answer names its scope's policy, and the budget left goes down in that scope only
    assert [r.status_code for r in submits + polls] == [202, 202, 200, 200]
    assert {r.headers["RateLimit-Policy"] for r in submits} == {'"submit";q=4;w=60'}
    assert {r.headers["RateLimit-Policy"] for r in polls} == {'"read";q=5;w=60'}
    assert [budget(r)[:2] for r in submits + polls] == [("submit", 3), ("submit", 2), ("read", 4), ("read", 3)]
    # More comes back as the spent requests leave the sliding window: within two of its minutes
    assert all(0 < budget(r)[2] <= 120 for r in submits + polls)


def test_the_429_tells_nothing_is_left_until_retry_after(make_api: Callable[..., Api], settings: Any) -> None:
    settings.API_READ_RATE_PER_MINUTE = 2
    api = make_api()

    answers = [api.get("/api/jobs/") for _ in range(3)]

    assert [r.status_code for r in answers] == [200, 200, 429]
    assert [budget(r)[1] for r in answers] == [1, 0, 0]
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "rate_limited"
    assert refused.headers["RateLimit-Policy"] == '"read";q=2;w=60'
    assert budget(refused)[2] == int(refused.headers["Retry-After"])


def test_requests_without_a_working_key_are_told_no_budget(make_api: Callable[..., Api], anonymous: Api) -> None:
    # The per-address budget of failed key checks is not advertised to whoever guesses keys.
    unknown = Api(anonymous.base_url, "not-a-key")

    answers = [anonymous.get("/api/jobs/"), unknown.get("/api/jobs/")]

    assert [r.status_code for r in answers] == [401, 401]
    assert not any("RateLimit" in r.headers or "RateLimit-Policy" in r.headers for r in answers)


def test_in_embedded_mode_the_budget_is_told_from_the_cache(
    make_api: Callable[..., Api], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given no Redis for the limiter (embedded mode: DRF's history in the cache)
    monkeypatch.setattr("core.cache_redis.configured", lambda: False)
    settings.API_READ_RATE_PER_MINUTE = 2
    api = make_api()

    answers = [api.get("/api/jobs/") for _ in range(3)]

    assert [r.status_code for r in answers] == [200, 200, 429]
    assert [budget(r)[:2] for r in answers] == [("read", 1), ("read", 0), ("read", 0)]
    assert 0 < budget(answers[0])[2] <= 60
    assert budget(answers[-1])[2] == int(answers[-1].headers["Retry-After"])


def test_a_batch_refused_tells_the_requests_still_left(make_api: Callable[..., Api], settings: Any) -> None:
    # Given 5 submissions a minute, 2 of them spent
    settings.API_SUBMIT_RATE_PER_MINUTE = 5
    api = make_api()
    for _ in range(2):
        assert api.post("/api/jobs/", json=BODY).status_code == 202

    # When a batch of 4 jobs comes, more than the 3 left
    refused = api.post("/api/jobs/batch/", json={"jobs": [BODY] * 4})

    # Then it is refused, and its RateLimit says the 3 single requests that still fit
    assert refused.status_code == 429, refused.json()
    scope, left, seconds = budget(refused)
    assert (scope, left) == ("submit", 3)
    assert 0 < seconds <= int(refused.headers["Retry-After"])


def test_in_embedded_mode_a_batch_refused_fits_at_its_retry_after(
    make_api: Callable[..., Api], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given embedded mode, 5 submissions a minute, and 3 spent at 0 s, 5 s and 10 s on a clock the test moves
    monkeypatch.setattr("core.cache_redis.configured", lambda: False)
    start = float(int(time.time()))
    now = [start]
    monkeypatch.setattr("core.throttling.RateThrottle.timer", lambda self: now[0])
    settings.API_SUBMIT_RATE_PER_MINUTE = 5
    api = make_api()
    for at in (0, 5, 10):
        now[0] = start + at
        assert api.post("/api/jobs/", json=BODY).status_code == 202

    # When a batch of 4 comes at 20 s, with 2 left
    now[0] = start + 20
    refused = api.post("/api/jobs/batch/", json={"jobs": [BODY] * 4})

    # Then it must wait for the two oldest to leave the window (at 65 s), and its RateLimit says
    # the 2 that fit now and one more when the oldest leaves (at 60 s)
    assert refused.status_code == 429, refused.json()
    assert int(refused.headers["Retry-After"]) == 45
    assert budget(refused) == ("submit", 2, 40)
    # A second early it is refused again; at its Retry-After it is admitted
    now[0] = start + 20 + 44
    assert api.post("/api/jobs/batch/", json={"jobs": [BODY] * 4}).status_code == 429
    now[0] = start + 20 + 45
    assert api.post("/api/jobs/batch/", json={"jobs": [BODY] * 4}).status_code == 202
