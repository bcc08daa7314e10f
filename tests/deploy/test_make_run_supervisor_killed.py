"""`make run`'s honcho killed (kill -9, the OOM killer): the processes it started stop too."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
import requests

from tests.core.test_make_run import (
    PROCESSES,
    _fresh_shell,
    _make_run,
    _sessions_left,
    _started_sessions,
    _wait_until_serving,
)

pytestmark = pytest.mark.slow


def _honcho_pid(make_pid: int) -> int:
    out = subprocess.run(["pgrep", "-g", str(make_pid), "-f", "honcho_start.py"], capture_output=True, text=True,
                         check=False)
    # honcho's readers, forked from it, have the same command line: honcho is their parent.
    pids = {int(pid) for pid in out.stdout.split()}
    [honcho] = [pid for pid in pids if int(Path(f"/proc/{pid}/stat").read_text().split()[3]) not in pids]
    return honcho


@pytest.mark.timeout(180)
def test_a_kill_9_of_make_runs_honcho_stops_every_process_it_started(tmp_path: Path) -> None:
    # Given make run serving
    env = _fresh_shell(tmp_path)
    log_path = tmp_path / "make-run.log"
    process = _make_run(env, log_path)
    sessions: dict[str, int] = {}
    try:
        _wait_until_serving(env, log_path, process)
        sessions = _started_sessions(log_path.read_text())
        assert len(sessions) == len(PROCESSES), log_path.read_text()

        # When its honcho is killed outright, no handler of its run (kill -9)
        os.kill(_honcho_pid(process.pid), signal.SIGKILL)
        process.wait(timeout=30)

        # Then every process it started stops, within their time to stop (they ran on, orphaned,
        # the API holding the port), and the port is free
        left = _sessions_left(sessions, timeout=30)
        assert left == [], (left, log_path.read_text())
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{env['PORT']}/healthz", timeout=2)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        if sessions:
            subprocess.run(["pkill", "-KILL", "-s", ",".join(map(str, sessions.values()))], check=False)
