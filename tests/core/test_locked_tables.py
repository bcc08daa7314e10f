"""A client's requests while a table they need is locked (a migration's ALTER TABLE waiting
behind a long transaction, a LOCK TABLE or a TRUNCATE by hand): each gives up waiting after
API_DB_LOCK_TIMEOUT_SECONDS and answers 503 `database_busy`, freeing its thread. Each waited for
the lock as long as it was held: the process's threads filled up, and the API answered nothing,
/healthz included."""
from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.conftest import REPO, Api, serving, worker_env
from tests.console.test_database_down import operator_cookie
from tests.locks import rows_held

LOCKED = "LOCK TABLE jobs_job IN ACCESS EXCLUSIVE MODE"


def timed(call: Callable[[], requests.Response]) -> tuple[requests.Response, float]:
    started = time.monotonic()
    answer = call()
    return answer, time.monotonic() - started


def test_with_the_jobs_table_locked_a_poll_and_a_submission_answer_busy_and_the_console_keeps_its_bound(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    # Given the API as production runs it, its lock waits bounded to 1 s, and a client with a job
    signed_in = operator_cookie()
    log_path = tmp_path / "gunicorn.log"
    with serving(make_api(), log_path, API_DB_LOCK_TIMEOUT_SECONDS="1") as (api, _):
        job = api.submit("api.tasks.hello_world")

        # When the jobs table is locked, and the client polls its job and submits another, a
        # probe asks /healthz and the operator's console refreshes
        with rows_held(LOCKED):
            polled, polled_in = timed(lambda: api.get(f"/api/jobs/{job['id']}"))
            submitted, submitted_in = timed(lambda: api.post(
                "/api/jobs/", json={"job_name": "api.tasks.hello_world", "payload": {}}))
            healthy, healthy_in = timed(lambda: requests.get(api.base_url + "/healthz", timeout=10))
            console, console_in = timed(lambda: requests.get(
                api.base_url + "/console/?fragment=1", headers=signed_in, timeout=10))
        # And once the lock is released
        polled_after = api.get(f"/api/jobs/{job['id']}")
        submitted_after = api.post("/api/jobs/", json={"job_name": "api.tasks.hello_world", "payload": {}})

    # Then the poll and the submission gave up after about the bound: 503 database_busy, to retry
    for answer, took in ((polled, polled_in), (submitted, submitted_in)):
        assert answer.status_code == 503 and 0.9 < took < 3, (answer.status_code, took, answer.text)
        assert answer.json()["error"]["code"] == "database_busy" and answer.headers["Retry-After"] == "5"
    # And the probe was answered
    assert healthy.status_code == 200 and healthy_in < 1, healthy_in
    # And the console kept its own, shorter bound on lock waits (its SET LOCAL wins over the
    # connection's), and its own message
    assert console.status_code == 503 and console_in < 0.9, (console.status_code, console_in)
    assert "OPERATOR_READ_TIMEOUT_SECONDS" in console.json()["error"]["message"], console.text
    # And the log said so once, no traceback nor Django's ERROR line for each 503, however many
    # requests met the lock
    log = log_path.read_text()
    said = [line for line in log.splitlines() if "Database busy: gave up waiting for a lock, answered 503" in line]
    assert len(said) == 1 and "lock timeout" in said[0] and "Traceback" not in log, log
    assert "Service Unavailable" not in log, log
    # And with the lock released both are served
    assert polled_after.status_code == 200 and submitted_after.status_code == 202, submitted_after.text


SHOW_LOCK_TIMEOUT = (
    "from django.db import connection\n"
    "with connection.cursor() as cursor:\n"
    "    cursor.execute('SHOW lock_timeout')\n"
    "    print(cursor.fetchone()[0])"
)


@pytest.mark.parametrize(("web_process", "url_options", "expected"), [
    # gunicorn.conf.py's marker: an API process
    ("true", "", "1500ms"),
    # a worker, a migration (`manage.py migrate`), any other command: no bound
    ("", "", "0"),
    # the DATABASE_URL's own ?options= comes after, and wins
    ("true", "?options=-c%20lock_timeout%3D7s", "7s"),
])
def test_only_an_api_processs_connections_bound_their_lock_waits(
    transactional_db: None, web_process: str, url_options: str, expected: str
) -> None:
    env = worker_env(API_DB_LOCK_TIMEOUT_SECONDS="1.5", JOBAPI_WEB_PROCESS=web_process)
    env["DATABASE_URL"] += url_options

    shown = subprocess.run([sys.executable, "manage.py", "shell", "-c", SHOW_LOCK_TIMEOUT], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=60, check=True)

    assert shown.stdout.splitlines()[-1] == expected, shown
