"""A kept database connection is checked before reuse after a pause only (core/connections.py):
one that broke while idle is replaced before it fails a request; one in steady use costs no
`SELECT 1` round trip per request or task."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from django.db import OperationalError, connection, connections
from django.db.backends.base.base import BaseDatabaseWrapper

from core.connections import (
    HEALTH_CHECK_AFTER_IDLE_SECONDS,
    connection_released,
    connection_reused,
)
from tests.conftest import SERVED_APP_NAME, Api, silent_server


@pytest.fixture
def kept() -> Iterator[BaseDatabaseWrapper]:
    """A connection of its own, kept as a request or task keeps it (the suite's own are not)."""
    wrapper = connections.create_connection("default")
    wrapper.settings_dict = {**wrapper.settings_dict, "CONN_MAX_AGE": 600}
    wrapper.ensure_connection()
    yield wrapper
    wrapper.close()


def _cut(wrapper: BaseDatabaseWrapper) -> None:
    """The server ends the connection's session, as a PostgreSQL restart does."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [wrapper.connection.info.backend_pid])


def _select(wrapper: BaseDatabaseWrapper) -> int:
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT 1")
        return int(cursor.fetchone()[0])


@pytest.mark.django_db
def test_a_connection_cut_while_idle_is_replaced_before_its_next_use(kept: BaseDatabaseWrapper) -> None:
    connection_released(kept)
    _cut(kept)
    time.sleep(HEALTH_CHECK_AFTER_IDLE_SECONDS + 0.1)

    connection_reused(kept)

    assert _select(kept) == 1


@pytest.mark.django_db
def test_a_connection_cut_within_the_pause_fails_its_next_query_only(kept: BaseDatabaseWrapper) -> None:
    # The price of not checking before every use (documented in core/connections.py).
    connection_released(kept)
    _cut(kept)
    connection_reused(kept)

    with pytest.raises(OperationalError):
        _select(kept)
    connection_released(kept)  # the request or task ends: a connection that failed is closed
    connection_reused(kept)
    assert _select(kept) == 1


def test_the_api_replaces_its_connections_cut_while_idle(served: Api) -> None:
    # Given: gunicorn serving, its connections open
    job = served.submit("api.tasks.hello_world", {"message": "m"})
    assert served.get(f"/api/jobs/{job['id']}/").status_code == 200

    # When: PostgreSQL ends their sessions while the process is idle
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
            [SERVED_APP_NAME],
        )
        assert cursor.fetchone()[0] >= 1
    time.sleep(HEALTH_CHECK_AFTER_IDLE_SECONDS + 0.1)

    # Then: the next requests are answered as usual
    for _ in range(3):
        assert served.get(f"/api/jobs/{job['id']}/").status_code == 200
    served.submit("api.tasks.hello_world", {"message": "after"})


@pytest.mark.django_db
def test_a_server_that_takes_the_connection_and_never_answers_fails_it_in_db_connect_timeout() -> None:
    # Given a database address that takes connections and never answers (a server stuck in
    # recovery, a failover's black hole)
    with silent_server() as server:
        host, port = server.address.split(":")
        wrapper = connections.create_connection("default")
        wrapper.settings_dict = {**wrapper.settings_dict, "HOST": host, "PORT": port}
        outcome: list[BaseException] = []

        def connect() -> None:
            try:
                wrapper.ensure_connection()
            except BaseException as exc:  # noqa: BLE001 (what the connection raised, read below)
                outcome.append(exc)

        # When a connection is made to it
        started = time.monotonic()
        attempt = threading.Thread(target=connect, daemon=True)
        attempt.start()
        attempt.join(timeout=20)

    # Then it fails after DB_CONNECT_TIMEOUT (5 s by default), rather than wait for ever
    assert not attempt.is_alive(), "the connection still waits after 20 s"
    assert isinstance(outcome[0], OperationalError) and "timeout" in str(outcome[0])
    assert 4 < time.monotonic() - started < 15
