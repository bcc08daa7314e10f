"""The numbers scripts/web and scripts/worker hand gunicorn and celery before the settings load
(processes, threads, connections, a timeout) stop the start when the server cannot run with
them, in one line naming the variable and its range, as the settings' numbers do."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port


def start_refused(script: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The script run as the image runs it; one that is not refused starts its server, and the
    run ends at the timeout (TimeoutExpired: the server started)."""
    return subprocess.run(
        [str(REPO / "scripts" / script)], cwd=tmp_path, capture_output=True, text=True, check=False, timeout=30,
        env={"PATH": "/usr/bin:/bin", "VIRTUAL_ENV": sys.prefix, "HOME": str(tmp_path),
             "DATA_DIR": str(tmp_path / "data"), "PORT": str(free_port()), **env},
    )


@pytest.mark.parametrize(("env", "line"), [
    # gunicorn read a word as a ValueError from its own module, naming no variable.
    ({"WEB_CONCURRENCY": "abc"}, "WEB_CONCURRENCY must be a whole number >= 1, not 'abc'."),
    # No process: gunicorn's master ran, serving nothing.
    ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY must be a whole number >= 1, not '0'."),
    ({"WEB_CONCURRENCY": "-1"}, "WEB_CONCURRENCY must be a whole number >= 1, not '-1'."),
    ({"WEB_THREADS": "0"}, "WEB_THREADS must be a whole number >= 1, not '0'."),
    ({"WEB_THREADS": ""}, "WEB_THREADS must be a whole number >= 1, not ''."),
    # A process that takes no connection, or takes fewer than its threads (its waits could hold them all).
    ({"WEB_MAX_CONNECTIONS": "0"}, "WEB_MAX_CONNECTIONS must be a whole number >= 256, not '0'."),
    ({"WEB_THREADS": "8", "WEB_MAX_CONNECTIONS": "7"}, "WEB_MAX_CONNECTIONS must be a whole number >= 8, not '7'."),
    # gunicorn's 0 turns the timeout off: a stuck process was never replaced.
    ({"WEB_TIMEOUT_SECONDS": "0"}, "WEB_TIMEOUT_SECONDS must be a whole number >= 1, not '0'."),
    ({"WEB_TIMEOUT_SECONDS": "1.5"}, "WEB_TIMEOUT_SECONDS must be a whole number >= 1, not '1.5'."),
])
def test_the_api_refuses_a_number_gunicorn_cannot_serve_with(tmp_path: Path, env: dict[str, str], line: str) -> None:
    result = start_refused("web", tmp_path, **env)

    assert result.returncode == 1, result.stderr[-500:]
    assert result.stderr.splitlines() == [f"{REPO}/scripts/web: {line}"], result.stderr[-500:]


@pytest.mark.parametrize(("env", "line"), [
    # celery took --concurrency 0 as the machine's core count, and refused a word naming its option.
    ({"WORKER_POOL": "threads", "WORKER_THREADS": "0"}, "WORKER_THREADS must be a whole number >= 1, not '0'."),
    ({"WORKER_POOL": "threads", "WORKER_THREADS": "many"}, "WORKER_THREADS must be a whole number >= 1, not 'many'."),
    ({"WORKER_PROCESSES": "0"}, "WORKER_PROCESSES must be a whole number >= 1, not '0'."),
    ({"WORKER_PROCESSES": "-2"}, "WORKER_PROCESSES must be a whole number >= 1, not '-2'."),
    # The jobs worker's count (no WORKER_PROCESSES): celery refused a word naming its option, and
    # 0 started celery, whose settings' traceback named it.
    ({"WORKER_CONCURRENCY": "abc"}, "WORKER_CONCURRENCY must be a whole number >= 1, not 'abc'."),
    ({"WORKER_CONCURRENCY": "0"}, "WORKER_CONCURRENCY must be a whole number >= 1, not '0'."),
])
def test_a_worker_refuses_a_count_celery_cannot_run_with(tmp_path: Path, env: dict[str, str], line: str) -> None:
    result = start_refused("worker", tmp_path, **env)

    assert result.returncode == 1, result.stderr[-500:]
    assert result.stderr.splitlines() == [f"{REPO}/scripts/worker: {line}"], result.stderr[-500:]
