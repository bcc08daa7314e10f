"""A job worker stopped as compose stops it (its stop_signal, then SIGKILL after its
stop_grace_period) hands the jobs it cannot finish in time back to the broker at once, rather
than being killed with them: a job cut off by Docker's SIGKILL waits out the broker's visibility
timeout (2 h) before any worker runs it again."""
from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from django.conf import settings
from django.utils import timezone

from console import selectors
from console.selectors import queues, workers_seen
from core.services import client_create
from jobs import dispatch
from jobs.models import Job
from tests.conftest import REPO, stop_process
from tests.deploy.test_scripts import (
    STARTUP_SECONDS,
    probe_app,
    purge,
    script_env,
    start,
    wait_for_worker,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

# Seconds the test's worker lets its job go on once stopped (compose's: WORKER_SOFT_SHUTDOWN_SECONDS),
# and the seconds Docker waits before its SIGKILL (compose's: stop_grace_period).
SOFT_SECONDS = 2
GRACE_SECONDS = 15
# Seconds the job runs: longer than the grace, as a long job is longer than compose's.
JOB_SECONDS = 25


def _seconds(period: str) -> int:
    """A compose duration of minutes or seconds ("2m", "30s") in seconds."""
    return int(period[:-1]) * {"m": 60, "s": 1}[period[-1]]


@pytest.mark.parametrize("service", ["worker", "worker-long"])
def test_compose_gives_the_job_workers_time_to_hand_their_jobs_back(service: str) -> None:
    config = yaml.safe_load((REPO / "docker-compose.yaml").read_text())["services"][service]

    assert config["stop_signal"] == "SIGQUIT"
    # The jobs' time to end, then the worker's own to hand back what is left and stop, within
    # the grace Docker gives it before its SIGKILL.
    assert float(config["environment"]["WORKER_SOFT_SHUTDOWN_SECONDS"]) + 20 <= _seconds(config["stop_grace_period"])


@dataclass
class Stopping:
    """A long-jobs worker started by its script, as compose runs it, and the job it runs."""

    worker: subprocess.Popen[bytes]
    hostname: str
    env: dict[str, str]
    prefix: str
    job: Job
    stop_signal: signal.Signals


@contextmanager
def worker_running_a_job(tmp_path: Path, *, soft_seconds: int, job_seconds: int, **extra_env: str) -> Iterator[Stopping]:
    """The long-jobs worker started by its script with that soft time, once its job (a
    long_running_task of job_seconds) has started; its worker (or the one that replaced it)
    stopped on the way out."""
    service = yaml.safe_load((REPO / "docker-compose.yaml").read_text())["services"]["worker-long"]
    prefix = f"test-{os.environ['TEST_RUN_ID']}-stop-{uuid.uuid4().hex[:8]}:"
    name = f"jobs_long-{uuid.uuid4().hex[:6]}"
    env = script_env(prefix, tmp_path / "data", QUEUES="jobs_long", WORKER_NAME=name, WORKER_PROCESSES="1",
                     WORKER_SOFT_SHUTDOWN_SECONDS=str(soft_seconds), METRICS_ENABLED="false", **extra_env)
    # Handed to the broker as a submission hands it (dispatched_at): else, while the worker
    # starts, the suite's beat took it for one the broker refused and its worker ran it, and this
    # one's message found it running (its lease) and ended at once
    job = Job.objects.create(owner=client_create(name=f"stop-{uuid.uuid4().hex[:6]}"),
                             job_name="api.tasks.long_running_task", payload={"duration": job_seconds},
                             dispatched_at=timezone.now())
    app = probe_app(prefix)
    stopping = Stopping(worker=start("worker", env, tmp_path), hostname=f"{name}@{os.uname().nodename}", env=env,
                        prefix=prefix, job=job, stop_signal=getattr(signal, service.get("stop_signal", "SIGTERM")))
    try:
        wait_for_worker(app, stopping.hostname, stopping.worker)
        (head,) = dispatch.job_signatures(job=job)
        app.send_task(head.task, args=head.args, kwargs=head.kwargs, **head.options)
        deadline = time.monotonic() + 30
        while Job.objects.get(pk=job.pk).status != Job.Status.STARTED:
            assert time.monotonic() < deadline, "the job did not start"
            time.sleep(0.1)
        yield stopping
    finally:
        stop_process(stopping.worker)
        app.close()
        purge(prefix)


def test_a_long_job_cut_off_by_a_stop_is_handed_back_at_once(transactional_db: Any, tmp_path: Path) -> None:
    # Given the long-jobs worker started by its script, running a job that lasts longer than
    # the worker's soft time
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    with worker_running_a_job(tmp_path, soft_seconds=SOFT_SECONDS, job_seconds=JOB_SECONDS) as stopping:
        job, worker = stopping.job, stopping.worker

        # When compose stops the worker: its stop signal, then SIGKILL once the grace is over
        worker.send_signal(stopping.stop_signal)
        try:
            worker.wait(timeout=GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            worker.kill()  # its pool process dies with it (Celery has the kernel kill it)
            worker.wait()

        # Then the job's message waits in its queue for the next worker (not among the killed
        # worker's unacknowledged ones, for the visibility timeout), the job not final; and the
        # next worker runs it to its end at once
        assert broker.llen(f"{stopping.prefix}jobs_long") == 1
        assert Job.objects.get(pk=job.pk).status == Job.Status.STARTED
        # and the console shows the worker stopped, its queue without it: Celery's cold shutdown
        # sends no worker_shutdown, and the worker stayed up, a consumer of jobs_long, until it
        # was lost (LOST_AFTER_SECONDS later), in red after every deploy
        workers = [row for row in workers_seen() if row.worker.hostname == stopping.hostname]
        assert [row.state for row in workers] == ["stopped"]
        assert {row.name: row.consumers for row in queues(workers=workers, broker_up=False)}["jobs_long"] == 0
        name = f"jobs_long-{uuid.uuid4().hex[:6]}"
        stopping.worker = worker = start("worker", {**stopping.env, "WORKER_NAME": name}, tmp_path)
        deadline = time.monotonic() + STARTUP_SECONDS + JOB_SECONDS
        while (status := Job.objects.get(pk=job.pk).status) != Job.Status.SUCCESS:
            assert worker.poll() is None and status == Job.Status.STARTED and time.monotonic() < deadline, status
            time.sleep(0.2)


# Seconds the short job runs; the soft time the worker is given, far longer; and the seconds the
# test waits for it to exit, longer than the job and a worker's own stop take, far shorter than
# the soft time.
SHORT_JOB_SECONDS = 2
LONG_SOFT_SECONDS = 120
EXIT_SECONDS = 30


def test_a_stopped_worker_exits_once_its_running_job_ends(transactional_db: Any, tmp_path: Path) -> None:
    # Given the long-jobs worker started by its script, with a soft time far longer than the job
    # it is running
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    with worker_running_a_job(tmp_path, soft_seconds=LONG_SOFT_SECONDS, job_seconds=SHORT_JOB_SECONDS) as stopping:
        worker = stopping.worker

        # When compose stops it (its stop signal), the job still running
        worker.send_signal(stopping.stop_signal)
        try:
            worker.wait(timeout=EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            pass

        # Then it exits once the job has ended, not at the end of its soft time: before, Celery's
        # soft shutdown slept the whole of it whenever a job was running (90 s in compose, at
        # every deploy), its loop blocked, however soon the job ended
        assert worker.returncode == 0, "still running: waiting out its soft time"
        # and the job ended as it would have without the stop, its message acknowledged, not
        # handed back to the queue for a second run
        assert Job.objects.get(pk=stopping.job.pk).status == Job.Status.SUCCESS
        assert broker.llen(f"{stopping.prefix}jobs_long") == 0


# Seconds the job runs through its worker's stop, and after the stop signal the console is read:
# the worker's loop may mark itself no more (a warm stop waits for its pool), and a worker
# silent for DRAIN_LOST_AFTER_SECONDS is taken for lost here (LOST_AFTER_SECONDS: 30).
DRAIN_JOB_SECONDS = 50
DRAIN_READ_AFTER_SECONDS = 38
DRAIN_LOST_AFTER_SECONDS = 15


@pytest.mark.parametrize(("pool", "stop_signal"), [
    ("prefork", signal.SIGTERM), ("prefork", signal.SIGQUIT),
    # The deliveries' pool: its warm stop waits for its threads in the worker's main loop.
    ("threads", signal.SIGTERM),
])
def test_a_worker_finishing_its_tasks_after_a_stop_is_up_until_it_exits(
    transactional_db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pool: str, stop_signal: signal.Signals
) -> None:
    # Given a worker running a long task, with a soft time longer than the task
    monkeypatch.setattr(selectors, "LOST_AFTER_SECONDS", DRAIN_LOST_AFTER_SECONDS)
    with worker_running_a_job(tmp_path, soft_seconds=LONG_SOFT_SECONDS, job_seconds=DRAIN_JOB_SECONDS,
                              WORKER_POOL=pool) as stopping:

        # When it is stopped (a warm stop, or compose's soft one) and finishes the task
        stopping.worker.send_signal(stop_signal)
        time.sleep(DRAIN_READ_AFTER_SECONDS)

        # Then the console shows it up, its queue's consumer for the task it finishes, not lost
        assert stopping.worker.poll() is None
        workers = [row for row in workers_seen() if row.worker.hostname == stopping.hostname]
        logs = "".join(log.read_text()[-2000:] for log in tmp_path.glob("worker-*.log"))
        assert [row.state for row in workers] == ["up"], logs
