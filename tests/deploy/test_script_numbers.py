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


@pytest.mark.parametrize(("script", "env", "line"), [
    # scripts/web: the numbers it hands gunicorn.
    # gunicorn read a word as a ValueError from its own module, naming no variable.
    ("web", {"WEB_CONCURRENCY": "abc"}, "WEB_CONCURRENCY must be a whole number from 1 to 64, not 'abc'."),
    # No process: gunicorn's master ran, serving nothing.
    ("web", {"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY must be a whole number from 1 to 64, not '0'."),
    ("web", {"WEB_CONCURRENCY": "-1"}, "WEB_CONCURRENCY must be a whole number from 1 to 64, not '-1'."),
    ("web", {"WEB_THREADS": "0"}, "WEB_THREADS must be a whole number from 1 to 320, not '0'."),
    ("web", {"WEB_THREADS": ""}, "WEB_THREADS must be a whole number from 1 to 320, not ''."),
    # A process that takes no connection, or takes fewer than its threads (its waits could hold them all).
    ("web", {"WEB_MAX_CONNECTIONS": "0"}, "WEB_MAX_CONNECTIONS must be a whole number from 256 to 448, not '0'."),
    ("web", {"WEB_THREADS": "8", "WEB_MAX_CONNECTIONS": "7"}, "WEB_MAX_CONNECTIONS must be a whole number from 8 to 944, not '7'."),
    # gunicorn's 0 turns the timeout off: a stuck process was never replaced.
    ("web", {"WEB_TIMEOUT_SECONDS": "0"}, "WEB_TIMEOUT_SECONDS must be a whole number from 1 to 3600, not '0'."),
    ("web", {"WEB_TIMEOUT_SECONDS": "1.5"}, "WEB_TIMEOUT_SECONDS must be a whole number from 1 to 3600, not '1.5'."),
    # Set but empty is checked too (unset, gunicorn takes its default).
    ("web", {"WEB_TIMEOUT_SECONDS": ""}, "WEB_TIMEOUT_SECONDS must be a whole number from 1 to 3600, not ''."),
    # Past the most a process can run with: gunicorn started them all, out of memory, PostgreSQL
    # connections, or descriptors (past 1024, the open-files limit a process often gets).
    ("web", {"WEB_CONCURRENCY": "100000"}, "WEB_CONCURRENCY must be a whole number from 1 to 64, not '100000'."),
    ("web", {"WEB_CONCURRENCY": "65"}, "WEB_CONCURRENCY must be a whole number from 1 to 64, not '65'."),
    ("web", {"WEB_THREADS": "10000000"}, "WEB_THREADS must be a whole number from 1 to 320, not '10000000'."),
    ("web", {"WEB_THREADS": "321"}, "WEB_THREADS must be a whole number from 1 to 320, not '321'."),
    # Connections and two descriptors a thread past 960: at the default 256 threads, 448.
    ("web", {"WEB_MAX_CONNECTIONS": "449"}, "WEB_MAX_CONNECTIONS must be a whole number from 256 to 448, not '449'."),
    ("web", {"WEB_THREADS": "320", "WEB_MAX_CONNECTIONS": "321"},
     "WEB_MAX_CONNECTIONS must be a whole number from 320 to 320, not '321'."),
    # A leading zero is decimal, as gunicorn reads it: the shell took 010 as octal 8 (most 944)
    # and 08 as an arithmetic error naming no variable.
    ("web", {"WEB_THREADS": "010", "WEB_MAX_CONNECTIONS": "941"},
     "WEB_MAX_CONNECTIONS must be a whole number from 10 to 940, not '941'."),
    ("web", {"WEB_THREADS": "08", "WEB_MAX_CONNECTIONS": "7"},
     "WEB_MAX_CONNECTIONS must be a whole number from 8 to 944, not '7'."),
    ("web", {"WEB_TIMEOUT_SECONDS": "3601"}, "WEB_TIMEOUT_SECONDS must be a whole number from 1 to 3600, not '3601'."),
    # scripts/worker: the counts it hands celery.
    # celery took --concurrency 0 as the machine's core count, and refused a word naming its option.
    ("worker", {"WORKER_POOL": "threads", "WORKER_THREADS": "0"}, "WORKER_THREADS must be a whole number from 1 to 100, not '0'."),
    ("worker", {"WORKER_POOL": "threads", "WORKER_THREADS": "many"}, "WORKER_THREADS must be a whole number from 1 to 100, not 'many'."),
    ("worker", {"WORKER_PROCESSES": "0"}, "WORKER_PROCESSES must be a whole number from 1 to 100, not '0'."),
    ("worker", {"WORKER_PROCESSES": "-2"}, "WORKER_PROCESSES must be a whole number from 1 to 100, not '-2'."),
    # The jobs worker's count (no WORKER_PROCESSES): celery refused a word naming its option, and
    # 0 started celery, whose settings' traceback named it.
    ("worker", {"WORKER_CONCURRENCY": "abc"}, "WORKER_CONCURRENCY must be a whole number from 1 to 100, not 'abc'."),
    ("worker", {"WORKER_CONCURRENCY": "0"}, "WORKER_CONCURRENCY must be a whole number from 1 to 100, not '0'."),
    # Past PostgreSQL's default max_connections, a connection each.
    ("worker", {"WORKER_CONCURRENCY": "101"}, "WORKER_CONCURRENCY must be a whole number from 1 to 100, not '101'."),
    ("worker", {"WORKER_PROCESSES": "1000"}, "WORKER_PROCESSES must be a whole number from 1 to 100, not '1000'."),
    ("worker", {"WORKER_POOL": "threads", "WORKER_THREADS": "101"},
     "WORKER_THREADS must be a whole number from 1 to 100, not '101'."),
])
def test_a_script_refuses_a_number_its_server_cannot_run_with(
    tmp_path: Path, script: str, env: dict[str, str], line: str,
) -> None:
    result = start_refused(script, tmp_path, **env)

    assert result.returncode == 1, result.stderr[-500:]
    assert result.stderr.splitlines() == [f"{REPO}/scripts/{script}: {line}"], result.stderr[-500:]
