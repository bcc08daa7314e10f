"""Fixtures for webhook tests: a real HTTP receiver on loopback (the copyable example's)."""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from django.conf import settings

from examples.receiver import Receiver, Reply
from tests.conftest import Api, every_connection_wrapped
from webhooks import claims

HELLO = "api.tasks.hello_world"
LONG = "api.tasks.long_running_task"


@pytest.fixture
def make_receiver() -> Iterator[Callable[..., Receiver]]:
    """Factory: a started receiver on 127.0.0.1 (any free port), stopped after the test."""
    started: list[Receiver] = []

    def factory(*replies: Reply, **kwargs: Any) -> Receiver:
        receiver = Receiver(replies=replies, **kwargs).start()
        started.append(receiver)
        return receiver

    yield factory
    for receiver in started:
        receiver.stop()


@pytest.fixture
def receiver(make_receiver: Callable[..., Receiver]) -> Receiver:
    return make_receiver()


@pytest.fixture
def delivery_writes() -> Iterator[list[tuple[str, int]]]:
    """The statements the live server sends PostgreSQL that write deliveries, with the rows
    each touched."""
    writes: list[tuple[str, int]] = []

    def record(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        result = execute(sql, params, many, context)
        if sql.lstrip().startswith(("UPDATE", "INSERT", "DELETE")) and '"webhooks_delivery"' in sql:
            writes.append((sql, context["cursor"].rowcount))
        return result

    with every_connection_wrapped(record):
        yield writes


@pytest.fixture(params=["postgresql", "portable"])
def claim_implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test with each way a delivery is claimed: PostgreSQL's one statement, and the
    ORM's three, which other databases (SQLite under `make run`) use."""
    if request.param == "portable":
        monkeypatch.setattr(claims, "claim_postgresql", claims.claim_portable)
    return str(request.param)


def secret_of(api: Api) -> str:
    response = api.get("/api/webhook-secret/")
    assert response.status_code == 200, response.text
    return response.json()["secret"]


def deliveries_of(api: Api, job_id: str) -> list[dict[str, Any]]:
    response = api.get(f"/api/jobs/{job_id}/deliveries/")
    assert response.status_code == 200, response.text
    return response.json()["results"]


def until(check: Callable[[], Any], *, timeout: float = 30, what: str) -> Any:
    """`check()`'s value once it is truthy (polled); fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def wait_deliveries(
    api: Api, job_id: str, until: Callable[[list[dict[str, Any]]], bool], timeout: float = 30
) -> list[dict[str, Any]]:
    """Poll the job's delivery log until `until(deliveries)` holds."""

    deadline = time.monotonic() + timeout
    while True:
        deliveries = deliveries_of(api, job_id)
        if until(deliveries):
            return deliveries
        if time.monotonic() > deadline:
            raise AssertionError(f"deliveries of {job_id} did not get there in {timeout}s: {deliveries}")
        time.sleep(0.05)


def all_final(deliveries: list[dict[str, Any]]) -> bool:
    return bool(deliveries) and all(d["state"] != "pending" for d in deliveries)


# How late an arrival may be against its slot (a loaded machine's worker pick-up and send).
ARRIVAL_JITTER_SECONDS = 0.1


def assert_arrived_paced(arrivals: list[float], *, every_seconds: float) -> None:
    """Arrival times (s) of deliveries sent at an endpoint's pace: each at its slot or a little
    late, so each later than the one before by at least its interval less the jitter, and the
    last the whole run's intervals after the first. Sent all at once, they would arrive within
    milliseconds of each other."""
    gaps = [later - earlier for earlier, later in pairwise(arrivals)]
    assert min(gaps) >= every_seconds - ARRIVAL_JITTER_SECONDS, gaps
    assert arrivals[-1] - arrivals[0] >= (len(arrivals) - 1) * every_seconds - ARRIVAL_JITTER_SECONDS, gaps


@pytest.fixture(params=["postgresql", "sqlite"])
def database_url(request: pytest.FixtureRequest, django_db_setup: Any, tmp_path: Path) -> Iterator[str]:
    """An empty database of the test's own, for a migration test's script (tests.conftest
    script_output): on the test server, named for the test's module, or an SQLite file."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db.sqlite3'}"
        return
    db = settings.DATABASES["default"]
    name = f"test_jobapi_{os.environ['TEST_RUN_ID']}_{request.module.__name__.rsplit('.', 1)[-1]}"
    host, port = db["HOST"] or "127.0.0.1", db["PORT"] or 5432
    admin = psycopg2.connect(dbname="postgres", user=db["USER"], password=db["PASSWORD"], host=host, port=port)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cursor.execute(f'CREATE DATABASE "{name}"')
        yield f"postgres://{db['USER']}:{db['PASSWORD']}@{host}:{port}/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
