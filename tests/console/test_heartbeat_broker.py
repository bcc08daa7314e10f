"""A worker reports itself up only while it consumes: its heartbeat thread wrote the row on
every beat whatever its consumer did, so a worker cut off from the broker (Redis gone, a network
between a worker's host and Redis) stayed "up" on the console and a consumer of its queues in
/metrics, and QueueWithoutConsumer never fired while nothing consumed its queue."""
from __future__ import annotations

import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings

from console import selectors
from tests.conftest import start_worker, stop_process, worker_env
from tests.proxy import CountingProxy

pytestmark = pytest.mark.usefixtures("transactional_db")


def _state_becomes(hostname: str, wanted: str, *, within: float) -> str:
    """The worker's state on the console once it is `wanted`, or at the end of `within` seconds."""
    deadline = time.monotonic() + within
    state = ""
    while time.monotonic() < deadline:
        state = next((row.state for row in selectors.workers_seen() if row.worker.hostname == hostname), "")
        if state == wanted:
            return state
        time.sleep(0.5)
    return state


def test_a_worker_cut_off_from_the_broker_is_no_longer_up_and_is_again_once_it_consumes(
    tmp_path: Path,
) -> None:
    # Given a worker, on a queue of its own, whose broker connections go through a proxy
    broker = urlsplit(settings.CELERY_BROKER_URL)
    proxy = CountingProxy((broker.hostname or "127.0.0.1", broker.port or 6379))
    queue = f"heartbeat-{uuid.uuid4().hex[:8]}"
    process, name = start_worker(
        log_dir=tmp_path, queues=queue, concurrency=1,
        env=worker_env(CELERY_BROKER_URL=broker._replace(netloc=proxy.address).geturl()),
    )
    try:
        assert _state_becomes(name, "up", within=15) == "up"

        # When the broker goes away from it (its database still answering)
        proxy.cut()
        cut_off = _state_becomes(name, "lost", within=60)

        # And comes back
        proxy.down = False
        back = _state_becomes(name, "up", within=90)
    finally:
        stop_process(process)
        proxy.close()

    # Then it was not up while it could consume nothing (its queue had no consumer), and is up
    # again; its log said why
    log = (tmp_path / f"{name}.log").read_text()
    assert (cut_off, back) == ("lost", "up"), log[-3000:]
    assert f"Worker {name} not reported up: its consumer has not run for" in log, log[-3000:]
