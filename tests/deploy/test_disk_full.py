"""A full disk, as the on-call audit found it: the API (scripts/web, embedded mode as `make run`
runs it, metrics on) with DATA_DIR on a small filesystem that fills, and with the metrics
directory's own filesystem full. The API answers what it cannot do, and its master stays up;
`make run`'s workers outlive the embedded broker's full disk and run jobs once it has room.

Each test mounts a tmpfs of its own (root only: CI runs the suite as root on this machine)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tests.conftest import REPO, free_port, stop_process, wait_until_up
from tests.console.test_metrics import parse, value
from tests.core.test_make_run import (
    SERVER_VARIABLES,
    _assert_stopped_cleanly,
    _ctrl_c,
    _wait_for_key,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(180),
    pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs, which needs root (CI runs as root)"),
]

METRICS_TOKEN = "disk-full-token"
SUBMISSION = {"job_name": "api.tasks.hello_world", "payload": {"message": "full"}}


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def fill(directory: Path) -> Path:
    """Writes a file until its filesystem has not a byte left."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as file:
        for chunk in (1 << 20, 4096, 1):
            try:
                while True:
                    file.write(bytes(chunk))
            except OSError as exc:
                assert exc.errno == 28, exc  # ENOSPC
    return filler


@contextmanager
def embedded_api(data_dir: Path, log_path: Path, **extra: str) -> Iterator[tuple[str, str, subprocess.Popen[bytes]]]:
    """scripts/web in embedded mode on `data_dir`, metrics on, one worker process: its address,
    the development API key, and gunicorn's master."""
    port = free_port()
    env = {name: value for name, value in os.environ.items() if name not in SERVER_VARIABLES}
    env.update(DATA_DIR=str(data_dir), PORT=str(port), WEB_CONCURRENCY="1", VIRTUAL_ENV=sys.prefix,
               METRICS_ENABLED="true", METRICS_TOKEN=METRICS_TOKEN, **extra)
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], cwd=REPO, env=env, check=True, timeout=120)
    key = subprocess.run([*manage, "dev_api_key"], cwd=REPO, env=env, check=True, capture_output=True,
                         text=True, timeout=60).stdout.strip()
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(REPO / "scripts" / "web")], cwd=REPO, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(f"{base}/healthz", process, log_path)
        yield base, key, process
    finally:
        stop_process(process)


def test_a_full_data_dir_answers_503_storage_full_and_not_ready_and_the_api_stays_up(tmp_path: Path) -> None:
    # Given the API in embedded mode on a small filesystem (its metrics where scripts/web puts them)
    with tmpfs(tmp_path / "data", "16m") as data_dir, embedded_api(
        data_dir, tmp_path / "web.log", METRICS_DIR=str(tmp_path / "metrics")
    ) as (base, key, process):
        headers = {"Authorization": f"Bearer {key}"}
        accepted = requests.post(f"{base}/api/jobs/", json=SUBMISSION, headers=headers, timeout=10)
        assert accepted.status_code == 202, accepted.text

        # When its disk fills
        filler = fill(data_dir)

        # Then a submission, and a poll, answer 503 storage_full with Retry-After, not 500
        refused = requests.post(f"{base}/api/jobs/", json=SUBMISSION, headers=headers, timeout=10)
        poll = requests.get(f"{base}/api/jobs/{accepted.json()['id']}/", headers=headers, timeout=10)
        for answer in (refused, poll):
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["code"] == "storage_full"
            assert answer.headers["Retry-After"] == "30"
        # /readyz says so, and so does /metrics, which still answers
        ready = requests.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 503 and "storage" in ready.json()["error"]["details"]["failed"], ready.text
        metrics = requests.get(f"{base}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10)
        assert metrics.status_code == 200, metrics.text
        assert value(parse(metrics.text), "jobapi_ready") == 0
        # gunicorn's master and its worker are still up, and the log says it in one line a request
        assert process.poll() is None
        log = (tmp_path / "web.log").read_text()
        assert "SIGBUS" not in log and "Traceback" not in log, log
        assert "Storage full, answered 503: [Errno 28] No space left on device" in log, log

        # And once space is freed, submissions are accepted again
        filler.unlink()
        again = requests.post(f"{base}/api/jobs/", json=SUBMISSION, headers=headers, timeout=10)
        assert again.status_code == 202, again.text


def _worker_pid(master: int) -> int:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(master)], capture_output=True, text=True, check=True)
    [pid] = out.stdout.split()
    return int(pid)


def test_a_worker_ended_while_the_metrics_filesystem_is_full_leaves_the_master_up(tmp_path: Path) -> None:
    # Given the API with its metrics directory on a small filesystem, and requests counted
    with tmpfs(tmp_path / "metrics", "4m") as metrics_dir, embedded_api(
        tmp_path / "data", tmp_path / "web.log", PROMETHEUS_MULTIPROC_DIR=str(metrics_dir)
    ) as (base, _key, process):
        scrape = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        for _ in range(3):
            assert requests.get(f"{base}/healthz", timeout=10).status_code == 200

        # When that filesystem is full and the worker process ends (gunicorn's master merges
        # the counts of a worker that ended into the directory's archive)
        filler = fill(metrics_dir)
        worker = _worker_pid(process.pid)
        os.kill(worker, signal.SIGKILL)

        # Then the master says it could not, in one line, and stays up
        log_path = tmp_path / "web.log"
        line = f"Could not merge the metrics of worker {worker}: [Errno 28] No space left on device"
        deadline = time.monotonic() + 30
        while line not in log_path.read_text():
            assert process.poll() is None, f"gunicorn's master exited with {process.returncode}:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        assert process.poll() is None

        # And once space is freed, a new worker serves the metrics, the ended one's counts too
        filler.unlink()
        deadline = time.monotonic() + 60
        while (metrics := requests.get(f"{base}/metrics", headers=scrape, timeout=10)).status_code != 200:
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        served = value(parse(metrics.text), "jobapi_http_requests_total", route="healthz", method="GET", status="200")
        assert served >= 3, metrics.text


def _job_completes(base: str, headers: dict[str, str], process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Submits a job and waits for it to succeed, make run's processes up all along."""
    accepted = requests.post(f"{base}/api/jobs/", json=SUBMISSION, headers=headers, timeout=10)
    assert accepted.status_code == 202, accepted.text
    deadline = time.monotonic() + 60
    while (job := requests.get(f"{base}/api/jobs/{accepted.json()['id']}/", headers=headers, timeout=10).json())[
        "status"
    ] != "SUCCESS":
        assert process.poll() is None and time.monotonic() < deadline, (job, log_path.read_text())
        time.sleep(0.2)


# The routing tables of the queues make run's workers consume (the Procfile's QUEUES).
EXCHANGES = {f"{queue}.exchange" for queue in ("jobs", "jobs_long", "webhooks", "maintenance")}


def test_make_runs_workers_outlive_a_full_data_dir_and_run_jobs_once_it_has_room(tmp_path: Path) -> None:
    # Given make run (the API, its workers and beat, on the embedded broker) on a small
    # filesystem, a job run
    with tmpfs(tmp_path / "data", "64m") as data_dir:
        env = {name: value for name, value in os.environ.items() if name not in SERVER_VARIABLES}
        env.update(PORT=str(port := free_port()), DATA_DIR=str(data_dir), WEB_CONCURRENCY="1")
        log_path = tmp_path / "make-run.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(["make", "run"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        try:
            base = f"http://127.0.0.1:{port}"
            headers = {"Authorization": f"Bearer {_wait_for_key(log_path, process)}"}
            wait_until_up(f"{base}/healthz", process, log_path)
            _job_completes(base, headers, process, log_path)
            # (Every worker started: each has declared its queues, whose routing tables are
            # written as a process first declares them; a table the full disk could not take
            # would stop its worker as it starts, core/broker_tables.py.)
            control = data_dir / "broker" / "control"
            deadline = time.monotonic() + 60
            while {path.name for path in control.glob("*.exchange")} < EXCHANGES:
                assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)

            # When its disk fills, and beat's next publishes of the periodic tasks fail there (an
            # empty message file each, as kombu wrote them), which the deliveries worker looks for
            # every 0.1 s
            filler = fill(data_dir)
            deadline = time.monotonic() + 30
            while "Could not send periodic task" not in log_path.read_text():
                assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
            queue = data_dir / "broker" / "queue"
            while any(queue.iterdir()):
                assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)

            # Then every process of make run is still up (honcho stops them all when one exits)
            assert process.poll() is None, log_path.read_text()
            assert "stopped (rc=" not in log_path.read_text(), log_path.read_text()
            assert not (data_dir / "broker" / "broken").exists()

            # And once space is freed, a job submitted runs, on the same workers
            filler.unlink()
            _job_completes(base, headers, process, log_path)
            assert "stopped (rc=" not in log_path.read_text(), log_path.read_text()
        finally:
            output = _ctrl_c(process, log_path)
        _assert_stopped_cleanly(output, process)
