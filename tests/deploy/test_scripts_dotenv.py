"""The scripts run by hand take their own variables (the ones they and gunicorn.conf.py read
before the settings load) from .env, as the settings do, the environment winning over the file
(scripts/dotenv.sh). On embedded defaults, in a checkout of their own (no .env is written into
the repository)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port, stop_process, wait_until_up
from tests.core.test_make_run import SERVER_VARIABLES, checkout_with_dotenv

pytestmark = pytest.mark.timeout(120)

# What these tests put in .env: the environment they run the scripts in sets only what it says.
DOTENV_VARIABLES = ("PORT", "WEB_CONCURRENCY", "WORKER_NAME", "WORKER_CONCURRENCY", "QUEUES", "LOG_LEVEL",
                    "BEAT_SCHEDULE_FILE", "ALLOWED_HOSTS", "HOST")


def environment_by_hand(checkout: Path, **environment: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SERVER_VARIABLES + DOTENV_VARIABLES}
    env.update(DATA_DIR=str(checkout.parent / "data"), VIRTUAL_ENV=sys.prefix, **environment)
    return env


def run_by_hand(checkout: Path, script: str, log_path: Path, **environment: str) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen([str(checkout / "scripts" / script)], cwd=checkout,
                                env=environment_by_hand(checkout, **environment), stdout=log,
                                stderr=subprocess.STDOUT)


def check_by_hand(checkout: Path, check: str, **environment: str) -> subprocess.CompletedProcess[str]:
    """scripts/healthcheck as an operator runs it: by its path, with whichever python3 the PATH
    has, from wherever the shell is."""
    return subprocess.run([str(checkout / "scripts" / "healthcheck"), check], cwd=checkout.parent,
                          env=environment_by_hand(checkout, **environment), capture_output=True, text=True,
                          check=False, timeout=60)


def wait_for_line(pattern: str, process: subprocess.Popen[bytes], log_path: Path) -> str:
    deadline = time.monotonic() + 60
    while not (match := re.search(pattern, log_path.read_text(), re.MULTILINE)):
        assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.1)
    return match.group(0)


def test_web_serves_on_the_port_dotenv_names_and_the_health_check_checks_it(tmp_path: Path) -> None:
    # Given a checkout whose .env names the API's port and host names, and a shell that names none
    port = free_port()
    checkout = checkout_with_dotenv(
        tmp_path, f"PORT={port}\nWEB_CONCURRENCY=1\nALLOWED_HOSTS=.jobs.example.com,127.0.0.1\n")
    log_path = tmp_path / "web.log"

    # When scripts/web is run there by hand
    web = run_by_hand(checkout, "web", log_path)

    # Then gunicorn listens on .env's port (it read the environment alone, and took 8000)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/healthz", web, log_path)
        # And the health check run there by hand finds it healthy, on .env's port with a host
        # name of .env's (it asked port 8000, as localhost, which Django refuses)
        healthy = check_by_hand(checkout, "web")
        # But not where the shell names another port: the environment wins over .env
        elsewhere = check_by_hand(checkout, "web", PORT=str(free_port()))
    finally:
        stop_process(web)
    assert healthy.returncode == 0, healthy.stderr
    assert elsewhere.returncode == 1 and "web unhealthy" in elsewhere.stderr, elsewhere.stderr


def test_worker_takes_its_name_from_dotenv_and_its_processes_from_the_environment(tmp_path: Path) -> None:
    # Given a .env naming the worker and its processes, and a shell naming its processes too
    checkout = checkout_with_dotenv(tmp_path, "WORKER_NAME=named-in-dotenv\nWORKER_CONCURRENCY=3\n")
    log_path = tmp_path / "worker.log"

    # When scripts/worker is run there by hand
    worker = run_by_hand(checkout, "worker", log_path, WORKER_CONCURRENCY="1")

    # Then its banner shows .env's name and the shell's process count
    try:
        concurrency = wait_for_line(r"concurrency: .*$", worker, log_path)
        assert re.search(r"^ -+ named-in-dotenv@", log_path.read_text(), re.MULTILINE), log_path.read_text()
        assert concurrency == "concurrency: 1 (prefork)"
    finally:
        stop_process(worker)


def test_beat_takes_its_schedule_file_from_dotenv_and_its_log_level_from_the_environment(tmp_path: Path) -> None:
    # Given a .env naming beat's schedule file and a log level, and a shell naming another level
    schedule = tmp_path / "schedule-named-in-dotenv"
    checkout = checkout_with_dotenv(tmp_path, f"BEAT_SCHEDULE_FILE={schedule}\nLOG_LEVEL=INFO\n")
    log_path = tmp_path / "beat.log"

    # When scripts/beat is run there by hand
    beat = run_by_hand(checkout, "beat", log_path, LOG_LEVEL="ERROR")

    # Then it keeps .env's schedule file and logs at the shell's level
    try:
        assert wait_for_line(r"\. db -> .*$", beat, log_path) == f". db -> {schedule}"
        assert wait_for_line(r"\. logfile -> .*$", beat, log_path) == ". logfile -> [stderr]@%ERROR"
    finally:
        stop_process(beat)
