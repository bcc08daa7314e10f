"""Every endpoint is rate limited per client, in its scope's budget (reads, writes, submissions,
sensitive writes), with 429 and Retry-After; the admin's login per client address."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
import requests

from tests.conftest import Api


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
