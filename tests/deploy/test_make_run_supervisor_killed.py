"""`make run`'s honcho killed (kill -9, the OOM killer): the processes it started stop too, its
data directory stays theirs until the last has stopped, and the metrics directory it left is the
next make run's on that data."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.core.test_make_run import (
    PROCESSES,
    _ctrl_c,
    _fresh_shell,
    _job,
    _long_job_running,
    _make_run,
    _metrics_dir,
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
    metrics_dir: Path | None = None
    try:
        _wait_until_serving(env, log_path, process)
        sessions = _started_sessions(log_path.read_text())
        assert len(sessions) == len(PROCESSES), log_path.read_text()
        metrics_dir = _metrics_dir(sessions["web.1"])

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
        # Left by the killed honcho, for the next make run on this data, which this test has not.
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


# Long enough that the old long-jobs worker is still running it when the next make run starts.
JOB_SECONDS = 20


def _until_refused_or_started(process: subprocess.Popen[bytes], log_path: Path) -> bool:
    """True once `process` (a make run) has exited, False once it has printed its API key."""
    deadline = time.monotonic() + 60
    while process.poll() is None:
        assert time.monotonic() < deadline, log_path.read_text()
        if "API key" in log_path.read_text():
            return False
        time.sleep(0.2)
    return True


@pytest.mark.timeout(240)
def test_after_a_kill_9_of_honcho_its_data_is_refused_to_another_make_run_until_its_running_job_ends(
    tmp_path: Path,
) -> None:
    # Given make run serving, its long-jobs worker running a job
    env = _fresh_shell(tmp_path)
    first_log, second_log, third_log = (tmp_path / f"{name}.log" for name in ("first", "second", "third"))
    first = _make_run(env, first_log)
    later: list[tuple[subprocess.Popen[bytes], Path]] = []
    sessions: dict[str, int] = {}
    metrics_dir: Path | None = None
    try:
        key = _wait_until_serving(env, first_log, first)
        sessions = _started_sessions(first_log.read_text())
        metrics_dir = _metrics_dir(sessions["web.1"])
        job_id = _long_job_running(env, key, first_log, {"duration": JOB_SECONDS, "message": "once"})

        # When its honcho is killed outright, and make run is typed again on the same data
        os.kill(_honcho_pid(first.pid), signal.SIGKILL)
        first.wait(timeout=30)
        second = _make_run(env, second_log)
        later.append((second, second_log))

        # Then it is refused while the old long-jobs worker finishes the job (its SIGTERM is a
        # warm stop): it started at once, put back the message of the job still running, and its
        # own worker ran the job a second time, beside the first
        refused = _until_refused_or_started(second, second_log)
        assert refused and second.returncode == 2, second_log.read_text()
        assert f"Another make run is using {tmp_path / 'data'}" in second_log.read_text(), second_log.read_text()
        # naming what holds it, as no make run does: the old long-jobs worker, among others
        assert f"pid {sessions['worker-long.1']} " in second_log.read_text(), second_log.read_text()
        assert _sessions_left({"worker-long.1": sessions["worker-long.1"]}, timeout=0), first_log.read_text()

        # And once every old process has stopped, make run starts, with nothing to put back: the
        # job ran once, to its end
        assert _sessions_left(sessions, timeout=JOB_SECONDS + 60) == [], first_log.read_text()
        # (the killed honcho's metrics directory left in memory, with its processes' files)
        (metrics_dir / "left-by-the-killed-run").touch()
        third = _make_run(env, third_log)
        later.append((third, third_log))
        key = _wait_until_serving(env, third_log, third)
        assert "Requeued" not in third_log.read_text(), third_log.read_text()
        job = _job(env, key, job_id)
        assert (job["status"], job["attempt"]) == ("SUCCESS", 1), job
        assert job["result"] == f"Slept for {JOB_SECONDS} seconds. Message: once", job
        # its processes in the metrics directory the killed honcho left, emptied: a kill -9 leaves
        # one a data directory, until its next make run (each left one of its own, for ever)
        assert _metrics_dir(_started_sessions(third_log.read_text())["web.1"]) == metrics_dir
        assert not (metrics_dir / "left-by-the-killed-run").exists()

        # And once it is stopped, nothing is left in memory
        _ctrl_c(third, third_log)
        assert not metrics_dir.exists(), third_log.read_text()
    finally:
        for process, log_path in later:
            if process.poll() is None:
                _ctrl_c(process, log_path)
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        if sessions:
            subprocess.run(["pkill", "-KILL", "-s", ",".join(map(str, sessions.values()))], check=False)
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
