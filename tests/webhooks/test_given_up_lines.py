"""What a client whose receiver always fails makes the deliveries worker log: a line per delivery
given up at INFO (its job's id in it), and a WARNING a client at most once a minute per process,
saying how many. It was one WARNING per delivery, so a client whose `callback_url` never answers
(a callback is never disabled, unlike an endpoint) had one written per job and event, at will."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
import structlog.testing
from celery import Celery
from django.conf import settings
from django.core.cache import cache

from core import log_volume
from core.models import Client
from core.services import client_create
from tests.conftest import REPO, free_port, stop_process, worker_env
from webhooks import attempts, outbox, telemetry
from webhooks.models import Delivery

# It boots a worker of its own.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _on_last_attempt(client: Client, url: str, count: int) -> dict[int, str]:
    """`count` new deliveries of `client` to `url`, each on its schedule's last attempt: each
    one's job id, by delivery id."""
    for _ in range(count):
        outbox.event_record(owner_id=client.pk, subject_id=uuid.uuid4(), event_type="job.succeeded",
                            data={"id": "x"}, callback_url=url, publish=False)
    last = len(settings.WEBHOOK_RETRY_SCHEDULE) - 1
    made = Delivery.objects.filter(owner=client, attempt_count=0)
    made.update(attempt_count=last)
    return {pk: str(subject) for pk, subject in Delivery.objects.filter(owner=client, attempt_count=last,
                                                                        state=Delivery.State.PENDING)
            .values_list("pk", "subject_id")}


def _client(name: str) -> Client:
    return client_create(name=f"{name}-{uuid.uuid4().hex[:6]}")


def test_fifty_deliveries_given_up_are_fifty_info_lines_and_one_warning(transactional_db: Any, tmp_path: Path) -> None:
    # Given a deliveries worker logging JSON at INFO, and 50 deliveries of one client and 3 of
    # another on their last attempt, to a receiver where nothing listens
    down = f"http://127.0.0.1:{free_port()}/hook"
    failing, other = _client("failing"), _client("other")
    jobs, other_jobs = _on_last_attempt(failing, down, 50), _on_last_attempt(other, down, 3)
    prefix = f"test-{os.environ['TEST_RUN_ID']}-givenup-{uuid.uuid4().hex[:8]}:"
    name = f"givenup-{uuid.uuid4().hex[:6]}@localhost"
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "core", "worker", "-Q", "webhooks", "-c", "1", "-n", name,
             "--without-mingle", "--without-gossip", "-l", "INFO"],
            cwd=REPO, env=worker_env(CELERY_BROKER_KEY_PREFIX=prefix, LOG_FORMAT="json", LOG_LEVEL="INFO"),
            stdout=log, stderr=subprocess.STDOUT,
        )
    app = Celery("given-up-probe", broker=settings.CELERY_BROKER_URL, set_as_current=False)
    app.conf.broker_transport_options = {"global_keyprefix": prefix}
    try:
        deadline = time.monotonic() + 60
        while not app.control.ping(destination=[name], timeout=0.5):
            assert worker.poll() is None and time.monotonic() < deadline, "the worker did not come up"

        # When its drain sends them all, and gives each up
        redis.Redis.from_url(settings.CACHE_URL).rpush(cache.make_key(f"{prefix}webhooks:due"), *jobs, *other_jobs)
        app.send_task("webhooks.deliveries_drain", queue="webhooks")
        deadline = time.monotonic() + 60
        while Delivery.objects.filter(owner__in=[failing, other], state=Delivery.State.FAILED).count() < 53:
            assert time.monotonic() < deadline, "the deliveries were not given up"
            time.sleep(0.2)
        time.sleep(1)  # the lines come right after the outcomes are recorded
    finally:
        stop_process(worker)
        app.close()

    # Then each delivery given up is one INFO line naming its job, and each client's are one
    # WARNING line, naming the client, its receiver's host and how many
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    info = [line for line in lines if line["message"] == "webhook delivery given up"]
    assert {line["level"] for line in info} == {"info"}
    assert {line["delivery_id"]: line["job_id"] for line in info} == {**jobs, **other_jobs}
    warnings = [line for line in lines if line["level"] in ("warning", "error", "critical")]
    assert sorted((line["message"], line["client"]) for line in warnings) == sorted(
        [("webhook deliveries given up", str(failing.pk)), ("webhook deliveries given up", str(other.pk))]
    ), warnings
    for line in warnings:
        assert line["receiver"] == "127.0.0.1" and line["outcome"] == "refused" and line["given_up"] >= 1
        assert line["job_id"] in (jobs | other_jobs).values()


@pytest.mark.django_db
def test_a_clients_warning_after_the_interval_counts_those_given_up_meanwhile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the warning's interval on a clock of the test's own, and a client whose receiver is down
    clock = [0.0]
    monkeypatch.setattr(telemetry, "_given_up", log_volume.CountedPerKey(seconds=60, clock=lambda: clock[0]))
    down = f"http://127.0.0.1:{free_port()}/hook"

    client = _client("failing")

    def given_up(count: int) -> list[dict[str, Any]]:
        jobs = _on_last_attempt(client, down, count)
        with structlog.testing.capture_logs() as lines:
            attempts.deliveries_attempt(delivery_ids=list(jobs))
        return [line for line in lines if line["log_level"] == "warning"]

    # When its deliveries are given up: 2, then 3 within the interval, then 1 after it
    first, within = given_up(2), given_up(3)
    clock[0] += 60
    after = given_up(1)

    # Then the first are told at once, the next held, and told with the one after the interval
    assert [(line["event"], line["given_up"]) for line in first] == [("webhook deliveries given up", 2)]
    assert within == []
    assert [(line["event"], line["given_up"]) for line in after] == [("webhook deliveries given up", 4)]
    assert after[0]["client"] == client.pk
