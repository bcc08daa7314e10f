"""A client's read that runs long (a page of its many jobs' large payloads): PostgreSQL ends the
statement after API_DB_STATEMENT_TIMEOUT_SECONDS and the request answers 503 `database_busy`,
freeing its thread and its backend. Before, the statement ran as long as it took, holding both,
and went on running in PostgreSQL after gunicorn had killed the worker that asked for it."""
from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from django.db import connection

from core.services import client_create, client_delete
from tests.conftest import REPO, Api, serving, worker_env
from tests.console.test_database_down import operator_cookie
from webhooks.endpoints import endpoint_delete
from webhooks.models import Endpoint


def _large_jobs(client: Api) -> None:
    """500 finished jobs of the client's with 20 KB payloads: a page of them is many megabytes of
    JSON for PostgreSQL to measure, past a bound of a millisecond."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO jobs_job (id, owner_id, job_name, payload, status, callback_url, webhook_events,
                                  cancel_requested, created_at, finished_at, metadata, attempt,
                                  max_attempts, retry_backoff_seconds, webhook_endpoints, request_id)
            SELECT gen_random_uuid(), %s, 'api.tasks.hello_world',
                   jsonb_build_object('text', repeat(md5(g::text), 625)), 'SUCCESS', '', '[]', false,
                   now() - g * interval '1 second', now(), '{}', 1, 1, 0, true, ''
            FROM generate_series(1, 500) g
            """,
            [client.client.pk],
        )


def test_a_read_past_the_statement_bound_answers_busy_and_the_server_goes_on(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    # Given a client with 500 jobs of 20 KB payloads each (a page of them is many megabytes of
    # JSON for PostgreSQL to measure), and the API as production runs it, its statements bounded
    # to a millisecond
    client = make_api()
    _large_jobs(client)
    log_path = tmp_path / "gunicorn.log"
    with serving(client, log_path, API_DB_STATEMENT_TIMEOUT_SECONDS="0.001") as (api, _):
        # When the client asks for a page of all of them, twice
        pages = [api.get("/api/jobs/?page_size=500") for _ in range(2)]
        # And a probe asks /healthz
        healthy = requests.get(api.base_url + "/healthz", timeout=10)

    # Then each was ended at the bound: 503 database_busy, naming what to do
    for page in pages:
        assert page.status_code == 503, (page.status_code, page.text[:300])
        error = page.json()["error"]
        assert error["code"] == "database_busy" and page.headers["Retry-After"] == "5", page.text
        assert "page_size" in error["message"], error
    assert healthy.status_code == 200
    # And the log said so once, without a traceback nor Django's ERROR line for each 503
    log = log_path.read_text()
    said = [line for line in log.splitlines() if "Database busy: a statement ran past" in line]
    assert len(said) == 1 and "statement timeout" in said[0] and "Traceback" not in log, log
    assert "Service Unavailable" not in log, log


def test_an_admin_list_past_the_statement_bound_answers_busy_in_an_operators_words(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    # Given 500 jobs of 20 KB payloads, an operator signed in, and the service's statements
    # bounded to a millisecond
    client = make_api()
    _large_jobs(client)
    signed_in = operator_cookie()
    with serving(client, tmp_path / "gunicorn.log", API_DB_STATEMENT_TIMEOUT_SECONDS="0.001") as (api, _):
        # When the operator searches the jobs' list in the admin
        page = requests.get(api.base_url + "/admin/jobs/job/?q=zzz", headers=signed_in, timeout=30)
        # And a client reads a page of its jobs
        listed = api.get("/api/jobs/?page_size=500")

    # Then the admin's 503 says what an operator can do, not the API's page_size
    assert page.status_code == 503 and page.headers["Retry-After"] == "5", (page.status_code, page.text[:300])
    message = page.json()["error"]["message"]
    assert "page_size" not in message and "narrow the list" in message, message
    # And the API's answer is as before
    assert listed.status_code == 503 and "page_size" in listed.json()["error"]["message"], listed.text[:300]


SHOW_TIMEOUTS = (
    "from django.db import connection\n"
    "with connection.cursor() as cursor:\n"
    "    cursor.execute(\"SELECT current_setting('statement_timeout'), current_setting('lock_timeout')\")\n"
    "    print(*cursor.fetchone())"
)


@pytest.mark.parametrize(("web_process", "url_options", "extra", "expected"), [
    # gunicorn.conf.py's marker: an API process
    ("true", "", {}, "2500ms 1500ms"),
    # a worker, a migration (`manage.py migrate`), any other command: no bound
    ("", "", {}, "0 0"),
    # 0: no bound on a statement's run, the lock wait's stays
    ("true", "", {"API_DB_STATEMENT_TIMEOUT_SECONDS": "0"}, "0 1500ms"),
    # the DATABASE_URL's own ?options= comes after, and wins
    ("true", "?options=-c%20statement_timeout%3D7s", {}, "7s 1500ms"),
])
def test_only_an_api_processs_connections_bound_their_statements(
    transactional_db: None, web_process: str, url_options: str, extra: dict[str, str], expected: str
) -> None:
    env = worker_env(**{"API_DB_LOCK_TIMEOUT_SECONDS": "1.5", "API_DB_STATEMENT_TIMEOUT_SECONDS": "2.5",
                        "JOBAPI_WEB_PROCESS": web_process, **extra})
    env["DATABASE_URL"] += url_options

    shown = subprocess.run([sys.executable, "manage.py", "shell", "-c", SHOW_TIMEOUTS], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=60, check=True)

    assert shown.stdout.splitlines()[-1] == expected, shown


SHOW_STARTUP_OPTIONS = (
    "from django.db import connection\n"
    "print(repr(connection.get_connection_params().get('options')))"
)


@pytest.mark.parametrize(("extra", "expected"), [
    # An API behind PgBouncer, set up as the docs said before the statement bound came: the lock
    # bound 0, since PgBouncer refuses a connection that sends libpq's `options` ("unsupported
    # startup parameter: options"). It still sends none: with the statement bound's default
    # sent, every request of the upgraded API failed to connect.
    ({"API_DB_LOCK_TIMEOUT_SECONDS": "0"}, "None"),
    # Its operator may still ask for the statement bound alone (a proxy that takes `options`)
    ({"API_DB_LOCK_TIMEOUT_SECONDS": "0", "API_DB_STATEMENT_TIMEOUT_SECONDS": "25"}, "'-c statement_timeout=25000'"),
    # Otherwise both, by default
    ({}, "'-c lock_timeout=5000 -c statement_timeout=25000'"),
])
def test_an_api_that_set_no_lock_bound_for_pgbouncer_sends_no_connection_options(
    transactional_db: None, extra: dict[str, str], expected: str
) -> None:
    env = worker_env(JOBAPI_WEB_PROCESS="true", **extra)
    for name in ("API_DB_LOCK_TIMEOUT_SECONDS", "API_DB_STATEMENT_TIMEOUT_SECONDS"):
        if name not in extra:
            env.pop(name, None)

    shown = subprocess.run([sys.executable, "manage.py", "shell", "-c", SHOW_STARTUP_OPTIONS], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=60, check=True)

    assert shown.stdout.splitlines()[-1] == expected, shown


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("deleted", ["endpoint", "client"])
def test_a_deletion_of_many_rows_is_not_cut_by_the_statement_bound(deleted: str) -> None:
    # Given a client's endpoint with 50,000 deliveries in its log, and a connection bounded as an
    # API process's are (a statement's run to 20 ms)
    owner = client_create(name="many-deliveries")
    endpoint_id = uuid.uuid4()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO webhooks_endpoint (id, url, description, event_types, enabled, disabled_reason, headers,
                                           consecutive_failures, last_error, created_at, owner_id, schedule_version)
            VALUES (%(endpoint)s, 'https://example.com/hooks', '', '[]', true, '', '{}', 0, '', now(),
                    %(owner)s, 0);
            INSERT INTO webhooks_event (message_id, owner_id, subject_id, event_type, body, created_at)
            VALUES ('msg_many', %(owner)s, gen_random_uuid(), 'job.succeeded', '\\x7b7d', now());
            INSERT INTO webhooks_delivery (event_id, owner_id, subject_id, url, state, redelivery, attempt_count,
                                           created_at, endpoint_id, authority)
            SELECT currval(pg_get_serial_sequence('webhooks_event', 'id')), %(owner)s, gen_random_uuid(),
                   'https://example.com/hooks', 'succeeded', false, 1, now(), %(endpoint)s, ''
            FROM generate_series(1, 50000);
            SET statement_timeout = '20ms'
            """,
            {"endpoint": endpoint_id, "owner": owner.pk},
        )
    try:
        # When the client deletes the endpoint (its log's 50,000 rows lose it), or the operator the client
        if deleted == "endpoint":
            endpoint_delete(owner_id=owner.pk, endpoint_id=endpoint_id)
        else:
            client_delete(client=owner)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET statement_timeout = 0")

    # Then it is done: the bound on a statement's run is lifted for the deletion's transaction
    # (cut at it, the deletion was undone whole every time, and never done)
    assert not Endpoint.objects.filter(pk=endpoint_id).exists()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM webhooks_delivery WHERE endpoint_id IS NOT NULL AND owner_id = %s",
                       [owner.pk])
        assert cursor.fetchone()[0] == 0
