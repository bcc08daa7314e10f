"""PostgreSQL out of reach, as an operator meets it: the console, the admin and the API answer 503
`database_unavailable` (not 500), show nothing to whoever is not signed in, and say so in one
log line with the request's id; /readyz and /metrics name the database; all serve again when
it is back. The service runs as production runs it (gunicorn), its database behind a proxy the
test cuts: the machine's shared PostgreSQL is never stopped."""
from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings
from django.contrib.auth.models import User
from django.db import DEFAULT_DB_ALIAS, OperationalError, connection, connections
from django.test import Client as BrowserClient
from django.utils import timezone

from core.errors import database_unreachable
from tests.conftest import Api, serving
from tests.proxy import CountingProxy

REQUEST_ID = "oncall-database-down-1"


@contextlib.contextmanager
def served_through_proxy(api: Api, log_path: Path, **extra_env: str) -> Iterator[tuple[Api, CountingProxy]]:
    """`api` against gunicorn whose database connections go through a proxy."""
    database = connection.settings_dict
    proxy = CountingProxy((database["HOST"] or "127.0.0.1", int(database["PORT"] or 5432)))
    url = (f"postgres://{database['USER']}:{database['PASSWORD']}@{proxy.address}/{database['NAME']}"
           "?connect_timeout=2")
    try:
        with serving(api, log_path, DATABASE_URL=url, READYZ_CHECK_SECONDS="0", **extra_env) as (served, _):
            yield served, proxy
    finally:
        proxy.close()


def operator_cookie() -> dict[str, str]:
    """A signed-in superuser's session, as the admin's login leaves it."""
    browser = BrowserClient()
    browser.force_login(User.objects.create_user("operator", is_staff=True, is_superuser=True))
    return {"Cookie": f"sessionid={browser.cookies['sessionid'].value}"}


def test_with_the_database_down_every_page_answers_503_saying_so(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    # Given the service up, an operator signed in, and a client with a key
    signed_in = operator_cookie()
    log_path = tmp_path / "gunicorn.log"
    with served_through_proxy(make_api(), log_path) as (api, proxy):
        assert requests.get(f"{api.base_url}/console/", headers=signed_in, timeout=30).status_code == 200

        # When PostgreSQL goes away, and everyone asks
        proxy.cut()

        def get(path: str, headers: dict[str, str]) -> requests.Response:
            return requests.get(api.base_url + path, headers={"X-Request-ID": REQUEST_ID, **headers}, timeout=30,
                                allow_redirects=False)

        console = get("/console/", signed_in)
        fragment = get("/console/?fragment=1", signed_in)
        admin = get("/admin/jobs/job/", signed_in)
        # (the same list, opened in a browser: text/html first)
        admin_page = get("/admin/jobs/job/", {**signed_in, "Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
        anonymous = get("/console/", {})
        login_page = requests.get(f"{api.base_url}/admin/login/", timeout=30)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page.text)
        signing_in = requests.post(
            f"{api.base_url}/admin/login/", timeout=30, allow_redirects=False,
            data={"csrfmiddlewaretoken": token.group(1) if token else "", "username": "operator", "password": "x" * 12},
            headers={"Cookie": f"csrftoken={login_page.cookies['csrftoken']}", "Referer": f"{api.base_url}/admin/login/"},
        )
        listed = get("/api/jobs/", api.headers())
        submitted = api.post("/api/jobs/", json={"job_name": "api.tasks.hello_world", "payload": {}})
        readyz = get("/readyz", {})
        scraped = get("/metrics", {"Authorization": f"Bearer {settings.METRICS_TOKEN}"})

        # And when it is back
        proxy.down = False
        back = get("/console/", signed_in)

    # Then the operator's pages and the API say the database is unreachable, with a 503 to retry
    unavailable = {"error": {"code": "database_unavailable", "message": "The database is unreachable; retry later.",
                             "details": None}}
    for answer in (console, fragment, admin, signing_in, listed, submitted):
        assert (answer.status_code, answer.json(), answer.headers["Retry-After"]) == (503, unavailable, "5"), (
            answer.request.url, answer.status_code, answer.text)
    # And the browser's is a page saying so
    assert admin_page.status_code == 503 and admin_page.headers["Content-Type"].startswith("text/html"), admin_page.text
    assert admin_page.headers["Retry-After"] == "5", admin_page.headers
    assert '<p id="message">The database is unreachable; retry later.</p>' in admin_page.text, admin_page.text
    # And nothing is shown to whoever is not signed in: they are sent to the login as before,
    # whose page shows, and whose sign-in is the 503
    assert anonymous.status_code == 302 and anonymous.headers["Location"] == "/admin/login/?next=/console/"
    assert login_page.status_code == 200 and token is not None
    # And the probes name the database
    assert readyz.status_code == 503 and readyz.json()["error"]["details"]["failed"] == ["database"]
    assert scraped.status_code == 200 and "\njobapi_ready 0.0\n" in scraped.text
    # And the log says it once a request, with the request's id, and no traceback
    log = log_path.read_text()
    said = [line for line in log.splitlines() if "Database unreachable, answered 503" in line]
    assert len(said) >= 3 and all(REQUEST_ID in line for line in said[:3]), said
    assert "Traceback" not in log, log
    # And the console serves again, the operator still signed in
    assert back.status_code == 200 and 'id="console-figures"' in back.text


STREAM_REQUEST_ID = "oncall-database-down-stream-1"


def test_with_the_database_down_an_open_event_stream_ends_in_one_line_naming_its_request(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    # Given a job not started yet (scheduled an hour ahead) and its event stream open, through
    # gunicorn, its key checked at each read and a read each second
    log_path = tmp_path / "gunicorn.log"
    api = make_api()
    run_at = (timezone.now() + timedelta(hours=1)).isoformat()
    job = api.post("/api/jobs/", json={"job_name": "api.tasks.hello_world", "payload": {}, "run_at": run_at}).json()
    with served_through_proxy(api, log_path, API_STREAM_HEARTBEAT_SECONDS="1", API_KEY_CACHE_SECONDS="0") as (
        served, proxy
    ):
        stream = served.get(f"/api/jobs/{job['id']}/events/", stream=True, timeout=30,
                            headers={"Accept": "text/event-stream", "X-Request-ID": STREAM_REQUEST_ID})
        chunks = stream.iter_content(None)
        opened = [next(chunks), next(chunks)]  # `retry:`, then (no event yet) a heartbeat

        # When PostgreSQL goes away under it
        proxy.cut()
        rest = b"".join(chunks)  # raises if the stream broke off rather than ended

    # Then the client's stream ended as a stream ends (it reconnects), after what it had
    assert opened == [b"retry: 1000\n\n", b": heartbeat\n\n"] and b"event: " not in rest, (opened, rest)
    # And the log says so in one WARNING line with the request's id, not a traceback of
    # gunicorn's naming no request (one for each client's stream open)
    log = log_path.read_text()
    said = [line for line in log.splitlines() if "Database unreachable, ended the event stream" in line]
    assert len(said) == 1 and STREAM_REQUEST_ID in said[0] and "warning" in said[0].lower(), log
    assert "Traceback" not in log and "Error handling request" not in log, log


def test_an_error_of_the_query_itself_is_not_taken_for_the_database_down(transactional_db: Any) -> None:
    # Given a query PostgreSQL cancels (its statement timeout), on a connection that still serves
    with pytest.raises(OperationalError) as canceled, connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = 10")
        cursor.execute("SELECT pg_sleep(1)")
    query_canceled = database_unreachable(canceled.value)
    # And a connection the server ended under the next query
    with connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = 0")
        pid = connection.connection.get_backend_pid()
    other = connections.create_connection(DEFAULT_DB_ALIAS)
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        other.close()
    with pytest.raises(OperationalError) as ended, connection.cursor() as cursor:
        cursor.execute("SELECT 1")

    # Then only the second is the database out of reach (answered 503; the first stays a 500)
    assert (query_canceled, database_unreachable(ended.value)) == (False, True)
    connection.close()
