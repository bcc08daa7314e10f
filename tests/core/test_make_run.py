"""`make run` on a fresh data directory: embedded defaults, no servers, a job completes and its
signed webhook arrives."""
from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from examples.receiver import Receiver
from tests.conftest import REPO, free_port, wait_until_up

# Not in `make test-fast`: see the README's "Two commands".
pytestmark = pytest.mark.slow

# Variables a fresh shell's `make run` does not have: those that would switch it away from its
# embedded defaults, and a make's own around the suite's (CI's `make test`), which would make it a
# sub-make that prints `make[1]: ***` where a user's prints `make: ***`.
SERVER_VARIABLES = (
    "DATABASE_URL", "POSTGRES_HOST", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "CACHE_URL",
    "SECRET_KEY", "DJANGO_SETTINGS_MODULE", "CELERY_BROKER_KEY_PREFIX", "DB_CONN_MAX_AGE",
    # The suite's metrics (tests/settings.py): make run has them off by default.
    "METRICS_ENABLED", "METRICS_TOKEN", "PROMETHEUS_MULTIPROC_DIR",
    "MAKELEVEL", "MAKEFLAGS", "MFLAGS",
    # A terminal's shell has no such setting (a CI runner's may): make run sets it itself.
    "PYTHONUNBUFFERED",
)

# The Procfile's processes, as honcho names them.
PROCESSES = [line.split(":")[0] for line in (REPO / "Procfile").read_text().splitlines() if line]


def _fresh_shell(tmp_path: Path, **settings: str) -> dict[str, str]:
    """A fresh shell's environment (SERVER_VARIABLES unset), for a make run on a free port and a
    data directory of the test's, one API process, with `settings` on top."""
    env = {k: v for k, v in os.environ.items() if k not in SERVER_VARIABLES}
    env.update({"PORT": str(free_port()), "DATA_DIR": str(tmp_path / "data"), "WEB_CONCURRENCY": "1", **settings})
    return env


def _fresh_shell_running(tmp_path: Path, sitecustomize: str, **settings: str) -> dict[str, str]:
    """_fresh_shell's environment, whose Pythons run `sitecustomize` as they start."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(sitecustomize)
    return _fresh_shell(tmp_path, PYTHONPATH=str(site), **settings)


def _make_run(env: dict[str, str], log_path: Path, cwd: Path = REPO) -> subprocess.Popen[bytes]:
    """`make run` started in `cwd`, its output to `log_path`, leading a session of its own."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(["make", "run"], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


@pytest.mark.timeout(180)
def test_make_run_serves_the_api_and_completes_a_job(tmp_path: Path) -> None:
    # The webhook receiver is on loopback, which callbacks may not reach unless allowed.
    env = _fresh_shell(tmp_path, WEBHOOK_ALLOWED_NETWORKS="127.0.0.1/32")
    log_path = tmp_path / "make-run.log"
    receiver = Receiver().start()
    process = _make_run(env, log_path)
    try:
        base = f"http://127.0.0.1:{env['PORT']}"
        key = _wait_until_serving(env, log_path, process)
        headers = {"Authorization": f"Bearer {key}"}
        receiver.secret = requests.get(f"{base}/api/webhook-secret/", headers=headers, timeout=10).json()["secret"]

        response = requests.post(
            f"{base}/api/jobs/",
            json={"job_name": "api.tasks.hello_world", "payload": {"message": "embedded"},
                  "callback_url": receiver.url},
            headers=headers, timeout=10,
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        deadline = time.monotonic() + 60
        while (job := requests.get(f"{base}/api/jobs/{job_id}/", headers=headers, timeout=10).json())[
            "status"
        ] != "SUCCESS":
            assert time.monotonic() < deadline, (job, log_path.read_text())
            time.sleep(0.2)

        assert job["result"] == "hello world embedded"
        # Each address the start-up message shows a newcomer answers (the API's with the key)
        shown = re.findall(r"^  (?:API|Docs): +(http\S+)", log_path.read_text(), flags=re.MULTILINE)
        assert len(shown) == 2, log_path.read_text()
        for url in shown:
            assert requests.get(url, headers=headers, timeout=10).status_code == 200, url
        [webhook] = receiver.wait_for(1)
        assert webhook.verified and webhook.event["type"] == "job.succeeded"
        assert webhook.event["data"]["id"] == job_id
        assert (tmp_path / "data" / "db.sqlite3").exists()
        assert "production uses PostgreSQL and Redis" in log_path.read_text()
        # Celery took the CELERY_ namespace's names for its old ones and warned at every start
        assert "deprecated" not in log_path.read_text(), log_path.read_text()
        # And beat has said it started, while running: its words waited in its output's buffer
        # until it stopped, and came after honcho's "sending SIGTERM to beat.1", as if starting then
        assert re.search(r"^.*beat\.1 +\| celery beat v\S+ .* is starting\.$", log_path.read_text(),
                         re.MULTILINE), log_path.read_text()
    finally:
        receiver.stop()
        output = _ctrl_c(process, log_path)
    _assert_stopped_cleanly(output, process)


def checkout_with_dotenv(tmp_path: Path, dotenv: str) -> Path:
    """This checkout's files linked into tmp_path, with `dotenv` as its .env: the test writes no
    .env into the repository."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in (".env", "var", ".git"):
            (checkout / entry.name).symlink_to(entry)
    (checkout / ".env").write_text(dotenv)
    return checkout


def _wait_for_key(log_path: Path, process: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        match = re.search(r"API key:\s+(\S+)", log_path.read_text())
        if match:
            return match.group(1)
        assert process.poll() is None, log_path.read_text()
        time.sleep(0.2)
    raise AssertionError("make run printed no API key:\n" + log_path.read_text())


def _wait_until_serving(env: dict[str, str], log_path: Path, process: subprocess.Popen[bytes]) -> str:
    """The development API key make run printed, once its API answers on the shell's PORT."""
    key = _wait_for_key(log_path, process)
    wait_until_up(f"http://127.0.0.1:{env['PORT']}/healthz", process, log_path)
    return key


def _ctrl_c(process: subprocess.Popen[bytes], log_path: Path) -> str:
    """Ctrl-C, as a person would (to make's whole process group); what make run printed."""
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError("make run did not stop on Ctrl-C:\n" + log_path.read_text()) from None
    return log_path.read_text()


def _assert_stopped_cleanly(output: str, process: subprocess.Popen[bytes]) -> None:
    """Every process stopped on its own, each exiting 0 (honcho kills one still running after
    5 s), and nothing was reported killed: the pool processes are told to stop by their worker
    alone, which logged each one's death by honcho's signal as an error. And make reported no
    error: honcho exits 130 after Ctrl-C, which make printed as `Error 130`."""
    stopped = re.findall(r"^.*\| (\S+) stopped \(rc=(-?\d+)\)$", output, re.MULTILINE)
    assert sorted(stopped) == sorted((f"{name}.1", "0") for name in PROCESSES), output
    assert "SIGKILL" not in output and "exited with 'signal" not in output, output
    assert "SIGINT received" in output and "make: ***" not in output, output
    assert _leftovers(process.pid) == []


def _leftovers(pgid: int) -> list[str]:
    time.sleep(0.5)
    out = subprocess.run(["ps", "-o", "pid=,args=", "-g", str(pgid)], capture_output=True, text=True, check=False)
    return [line for line in out.stdout.splitlines() if line.strip()]


@pytest.mark.timeout(180)
def test_make_run_serves_on_the_port_it_prints_the_environment_winning_over_env_file(tmp_path: Path) -> None:
    # Given a checkout whose .env names one port, and a shell that names another
    shell_port, file_port = free_port(), free_port()
    checkout = checkout_with_dotenv(tmp_path, f"PORT={file_port}\nWEB_CONCURRENCY=1\n")
    env = _fresh_shell(tmp_path, PORT=str(shell_port))
    log_path = tmp_path / "make-run.log"

    # When make run starts there
    process = _make_run(env, log_path, cwd=checkout)
    try:
        _wait_for_key(log_path, process)
        printed = re.search(r"API:\s+http://127\.0\.0\.1:(\d+)/", log_path.read_text())

        # Then the API answers on the port it printed, the shell's, as the settings would read
        # them (the environment over .env); honcho let .env's win, and served where it did not say
        assert printed and int(printed.group(1)) == shell_port, log_path.read_text()
        wait_until_up(f"http://127.0.0.1:{shell_port}/healthz", process, log_path)
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{file_port}/healthz", timeout=2)
    finally:
        # (The workers may still be starting: one stopped before it set its handlers dies by the signal.)
        _ctrl_c(process, log_path)
    assert _leftovers(process.pid) == []


@pytest.mark.timeout(180)
def test_make_run_shows_the_address_dotenv_has_the_api_listen_on(tmp_path: Path) -> None:
    # Given a checkout whose .env has the API listen on another address than 127.0.0.1 (a LAN
    # address, to try it from another machine; here another loopback one) and answer to it
    checkout = checkout_with_dotenv(tmp_path, "HOST=127.0.0.2\nALLOWED_HOSTS=127.0.0.2\n")
    env = _fresh_shell(tmp_path)
    log_path = tmp_path / "make-run.log"

    # When make run starts there
    process = _make_run(env, log_path, cwd=checkout)
    try:
        key = _wait_for_key(log_path, process)
        wait_until_up(f"http://127.0.0.2:{env['PORT']}/healthz", process, log_path)

        # Then each address it shows answers (they named 127.0.0.1, where nothing listened)
        shown = re.findall(r"^  (?:API|Docs): +(http\S+)", log_path.read_text(), flags=re.MULTILINE)
        assert shown == [f"http://127.0.0.2:{env['PORT']}/api/jobs/", f"http://127.0.0.2:{env['PORT']}/api/docs/"], \
            log_path.read_text()
        for url in shown:
            assert requests.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code == 200, url
    finally:
        _ctrl_c(process, log_path)
    assert _leftovers(process.pid) == []


@pytest.mark.timeout(180)
def test_make_run_fails_when_one_of_its_processes_stops_on_its_own(tmp_path: Path) -> None:
    # Given make run's port taken by another server, where its API cannot listen
    log_path = tmp_path / "make-run.log"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = _fresh_shell(tmp_path, PORT=str(taken.getsockname()[1]))

        # When make run starts
        process = _make_run(env, log_path)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise AssertionError("make run went on without its API:\n" + log_path.read_text()) from None

    # Then the API's stop stopped them all, and make run failed, as make says
    output = log_path.read_text()
    assert re.search(r"^.*\| web\.1 stopped \(rc=[1-9]\d*\)$", output, re.MULTILINE), output
    assert process.returncode == 2, output
    assert re.search(r"^make: \*\*\* \[Makefile:\d+: run\] Error [1-9]\d*$", output, re.MULTILINE), output
    assert _leftovers(process.pid) == []


def _job(env: dict[str, str], key: str, job_id: str) -> dict[str, Any]:
    response = requests.get(f"http://127.0.0.1:{env['PORT']}/api/jobs/{job_id}/",
                            headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def _long_job_running(env: dict[str, str], key: str, log_path: Path, payload: dict[str, Any]) -> str:
    """The id of a long_running_task of `payload`, submitted and seen STARTED."""
    response = requests.post(
        f"http://127.0.0.1:{env['PORT']}/api/jobs/",
        json={"job_name": "api.tasks.long_running_task", "payload": payload},
        headers={"Authorization": f"Bearer {key}"}, timeout=10,
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    deadline = time.monotonic() + 60
    while (job := _job(env, key, job_id))["status"] != "STARTED":
        assert job["status"] == "PENDING" and time.monotonic() < deadline, (job, log_path.read_text())
        time.sleep(0.2)
    return str(job_id)


@pytest.mark.timeout(300)
def test_a_job_running_when_make_run_is_stopped_runs_again_at_its_next_start(tmp_path: Path) -> None:
    # Given make run running a long job, longer than the 5 s honcho gives a worker to stop
    env = _fresh_shell(tmp_path)
    first_log = tmp_path / "first.log"
    process = _make_run(env, first_log)
    try:
        key = _wait_until_serving(env, first_log, process)
        job_id = _long_job_running(env, key, first_log, {"duration": 10})
    finally:
        # When it is stopped (Ctrl-C: honcho kills the long-jobs worker 5 s later, mid-job)
        output = _ctrl_c(process, first_log)
    assert "sending SIGKILL to worker-long" in output, output

    # And started again on the same data
    second_log = tmp_path / "second.log"
    process = _make_run(env, second_log)
    try:
        wait_until_up(f"http://127.0.0.1:{env['PORT']}/healthz", process, second_log)

        # Then the job runs again and succeeds (its message was lost with the killed worker, and
        # the job stayed STARTED, holding its client's one running place, for hours)
        deadline = time.monotonic() + 60
        while (job := _job(env, key, job_id))["status"] != "SUCCESS":
            assert time.monotonic() < deadline, (job, second_log.read_text())
            time.sleep(0.5)
        assert job["result"].startswith("Slept for 10 seconds.")
    finally:
        _ctrl_c(process, second_log)


@pytest.mark.timeout(180)
def test_a_second_make_run_on_the_same_data_is_refused_and_the_first_goes_on(tmp_path: Path) -> None:
    # Given make run serving on a data directory
    env = _fresh_shell(tmp_path)
    first_log = tmp_path / "first.log"
    first = _make_run(env, first_log)
    try:
        _wait_until_serving(env, first_log, first)

        # When another starts on the same data, on a port of its own (its start would put back in
        # their queues the messages the first one's workers are running: their jobs run twice)
        second_log = tmp_path / "second.log"
        second = _make_run({**env, "PORT": str(free_port())}, second_log)
        try:
            second.wait(timeout=60)
        except subprocess.TimeoutExpired:
            _ctrl_c(second, second_log)
            raise AssertionError("a second make run started:\n" + second_log.read_text()) from None

        # Then it stops at once, saying why, and the first goes on serving
        output = second_log.read_text()
        assert second.returncode == 2, output
        assert f"Another make run is using {tmp_path / 'data'}" in output and "API key" not in output, output
        assert first.poll() is None, first_log.read_text()
        assert requests.get(f"http://127.0.0.1:{env['PORT']}/healthz", timeout=10).status_code == 200
    finally:
        # (The workers may still be starting: one stopped before it set its handlers dies by the signal.)
        _ctrl_c(first, first_log)
    assert _leftovers(first.pid) == []


def _started_sessions(output: str) -> dict[str, int]:
    """Each Procfile process's pid as honcho printed it: each leads a session of its own (its pool
    processes in it too), out of the terminal's."""
    return {name: int(pid) for name, pid in re.findall(r"\| (\S+) started \(pid=(\d+)\)", output)}


def _sessions_left(sessions: dict[str, int], *, timeout: float) -> list[str]:
    """The processes still running, after up to `timeout` seconds, in the sessions given."""
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(["ps", "-o", "pid=,args=", "-s", ",".join(map(str, sessions.values()))],
                             capture_output=True, text=True, check=False)
        left = [line for line in out.stdout.splitlines() if line.strip()]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def _metrics_dir(pid: int) -> Path:
    environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    [value] = [item.split(b"=", 1)[1] for item in environment if item.startswith(b"METRICS_DIR=")]
    return Path(value.decode())


def _data_dir_free(data_dir: Path) -> bool:
    with open(data_dir / "make-run.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def _honchos_stderr(data_dir: Path) -> str:
    """What honcho wrote to standard error once its terminal was gone (a traceback of its loop):
    DATA_DIR's log (scripts/make_run_terminal.py), or why there is none."""
    try:
        return (data_dir / "make-run-stderr.log").read_text(errors="replace")[-20_000:]
    except FileNotFoundError:
        return "(none: no write of honcho's to its terminal failed)"
    except OSError as error:  # the report of the failure at hand must not be replaced by this
        return f"(not read: {error})"


def _process_states(left: list[str], data_dir: Path) -> str:
    """What a failure needs to tell a stuck process from an unsignalled one: each process's state,
    signals (pending, blocked, ignored, caught) and wait channel, and its parents' up to init (its
    reader, and honcho, if they still run: honcho waiting in do_wait had raised and waits on its
    readers at its exit; polling or on a futex, it is stuck in its loop); then what honcho wrote
    to standard error once its terminal was gone (the traceback of a loop that raised)."""

    def read(path: str) -> str:
        try:
            return Path(path).read_bytes().decode(errors="replace")
        except OSError:  # gone meanwhile
            return ""

    def status(pid: str) -> dict[str, str]:
        return dict(line.split(":\t", 1) for line in read(f"/proc/{pid}/status").splitlines() if ":\t" in line)

    def state(pid: str, fields: dict[str, str], names: tuple[str, ...]) -> str:
        return " ".join(f"{name}={fields.get(name, '?')}" for name in names) + f" wchan={read(f'/proc/{pid}/wchan')}"

    described = []
    for line in left:
        pid = line.split()[0]
        fields = status(pid)
        parents, parent = [], fields.get("PPid", "0")
        while parent not in ("0", "1") and len(parents) < 6:
            parent_fields = status(parent)
            command = " ".join(read(f"/proc/{parent}/cmdline").split("\0"))[:80] or "(gone)"
            parents.append(f"{parent} {command} ({state(parent, parent_fields, ('State',))})")
            parent = parent_fields.get("PPid", "0")
        signals = state(pid, fields, ("State", "SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt"))
        described.append(f"{line}\n    {signals}\n    parents: {' <- '.join(parents) or 'init'}")
    described.append(f"--- honcho's standard error once its terminal was gone ---\n{_honchos_stderr(data_dir)}")
    return "\n".join(described)


def _assert_all_gone(sessions: dict[str, int], metrics_dir: Path, data_dir: Path, port: str, output: str) -> None:
    left = _sessions_left(sessions, timeout=30)
    assert left == [], f"{output}\n--- the processes left ---\n{_process_states(left, data_dir)}"
    # Removed by honcho's process once they have all stopped: a moment after the last has; and
    # the lock released as that process exits, a moment after that (60 ms on a loaded machine).
    deadline = time.monotonic() + 10
    while metrics_dir.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not metrics_dir.exists(), f"{output}\n--- honcho's standard error ---\n{_honchos_stderr(data_dir)}"
    while not _data_dir_free(data_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _data_dir_free(data_dir), f"{output}\n--- honcho's standard error ---\n{_honchos_stderr(data_dir)}"
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


@pytest.mark.timeout(180)
def test_closing_make_runs_terminal_stops_every_process_it_started(tmp_path: Path) -> None:
    # Given make run typed into a terminal's shell, and everything started
    env = _fresh_shell(tmp_path)
    shell, terminal = pty.fork()
    if shell == 0:  # pragma: no cover (the terminal's shell, in the child)
        os.chdir(REPO)
        os.execvpe("bash", ["bash", "--norc", "--noprofile", "-i"], env)
    output = b""

    def read_terminal_until(done: Callable[[], bool]) -> None:
        # The terminal read meanwhile, as a terminal does: a full one would stop honcho's writes.
        nonlocal output
        deadline = time.monotonic() + 90
        while not done():
            assert time.monotonic() < deadline, output.decode(errors="replace")
            if select.select([terminal], [], [], 0.2)[0]:
                output += os.read(terminal, 65536)

    def serving() -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{env['PORT']}/healthz", timeout=0.5).status_code == 200
        except requests.RequestException:
            return False

    try:
        os.write(terminal, b"make run\n")
        read_terminal_until(lambda: len(_started_sessions(output.decode(errors="replace"))) == len(PROCESSES))
        sessions = _started_sessions(output.decode(errors="replace"))
        metrics_dir = _metrics_dir(sessions["web.1"])
        read_terminal_until(serving)
    finally:
        # When the terminal is closed (its window, or an ssh connection lost): the shell's SIGHUP,
        # which it passes on to make run
        os.close(terminal)
        os.waitpid(shell, 0)

    # Then every process make run started has stopped, within honcho's time to stop them, its
    # metrics directory is gone and its data directory is free for the next make run (the workers
    # went on consuming the broker and the API serving, the lock on the data released)
    _assert_all_gone(sessions, metrics_dir, tmp_path / "data", env["PORT"], output.decode(errors="replace"))
    # And honcho's loop did not raise: what it wrote to standard error once the terminal was gone
    # is in DATA_DIR's log (it went to /dev/null), and holds no traceback
    honchos_stderr = _honchos_stderr(tmp_path / "data")
    assert "lost its terminal" in honchos_stderr and "Traceback" not in honchos_stderr, honchos_stderr


# honcho's word that beat started (its reader's "start" message, from which honcho learns the pid
# it signals) held back 5 s, beat's pid noted once it runs: a stop then comes before honcho has it.
_BEAT_START_HELD = """\
import os, sys, time
if sys.argv[0].endswith("honcho_start.py"):
    from honcho.process import Process
    def send(self, data, type="line", send=Process._send_message):
        if type == "start" and self.name == "beat.1":
            with open(os.environ["BEAT_PID"] + ".part", "w") as noted:
                noted.write(str(data["pid"]))
            os.rename(os.environ["BEAT_PID"] + ".part", os.environ["BEAT_PID"])
            time.sleep(5)
        send(self, data, type)
    Process._send_message = send
"""


@pytest.mark.timeout(180)
def test_closing_make_runs_terminal_as_its_processes_start_stops_every_one(tmp_path: Path) -> None:
    # Given make run typed into a terminal's shell, its processes started, honcho not yet told
    # beat's pid
    beat_pid = tmp_path / "beat-pid"
    env = _fresh_shell_running(tmp_path, _BEAT_START_HELD, BEAT_PID=str(beat_pid))
    shell, terminal = pty.fork()
    if shell == 0:  # pragma: no cover (the terminal's shell, in the child)
        os.chdir(REPO)
        os.execvpe("bash", ["bash", "--norc", "--noprofile", "-i"], env)
    output = b""
    try:
        os.write(terminal, b"make run\n")
        deadline = time.monotonic() + 90
        while not (beat_pid.exists() and len(_started_sessions(output.decode(errors="replace"))) == len(PROCESSES) - 1):
            assert time.monotonic() < deadline, output.decode(errors="replace")
            if select.select([terminal], [], [], 0.2)[0]:
                output += os.read(terminal, 65536)
        sessions = {**_started_sessions(output.decode(errors="replace")), "beat.1": int(beat_pid.read_text())}
        metrics_dir = _metrics_dir(sessions["web.1"])
    finally:
        # When the terminal is closed then (honcho's stop signalled the processes whose pid it
        # had, up to the first it lacked, and failed there: KeyError)
        os.close(terminal)
        os.waitpid(shell, 0)

    # Then every process has stopped, beat too once honcho heard it start, and make run's
    # metrics directory and data directory are freed (beat, or the deliveries worker too, ran on,
    # and honcho waited on them with the lock on the data held)
    try:
        _assert_all_gone(sessions, metrics_dir, tmp_path / "data", env["PORT"], output.decode(errors="replace"))
    finally:
        subprocess.run(["pkill", "-KILL", "-s", ",".join(map(str, sessions.values()))], check=False)


@pytest.mark.timeout(180)
def test_a_kill_of_make_run_stops_every_process_it_started(tmp_path: Path) -> None:
    # Given make run serving
    env = _fresh_shell(tmp_path)
    log_path = tmp_path / "make-run.log"
    process = _make_run(env, log_path)
    try:
        _wait_until_serving(env, log_path, process)
        sessions = _started_sessions(log_path.read_text())
        assert len(sessions) == len(PROCESSES), log_path.read_text()
        metrics_dir = _metrics_dir(sessions["web.1"])

        # When make is killed (`kill <pid>`: SIGTERM, which make passes on to scripts/run-dev)
        process.terminate()
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)

    # Then every process make run started has stopped, as with Ctrl-C (scripts/run-dev died and
    # left honcho running them all, the lock on the data with it, and the metrics directory gone)
    output = log_path.read_text()
    _assert_all_gone(sessions, metrics_dir, tmp_path / "data", env["PORT"], output)
    assert _leftovers(process.pid) == []
    assert "SIGTERM received" in output, output


# A start-up step that outlives Ctrl-C and exits 0, as Python does when the signal lands in its
# shutdown (a finalizer's `Exception ignored ... KeyboardInterrupt`): `manage.py migrate`, slowed
# so that the test's Ctrl-C finds it running, writes STARTED, takes the SIGINT and ends cleanly.
_STEP_OUTLIVING_CTRL_C = """\
import os, signal, sys, time
if "migrate" in sys.argv[:3]:  # manage.py migrate, run as a script or by -c code
    interrupted = []
    signal.signal(signal.SIGINT, lambda *_: interrupted.append(1))
    open(os.environ["STEP_STARTED"], "w").close()
    deadline = time.monotonic() + 30
    while not interrupted and time.monotonic() < deadline:
        time.sleep(0.05)
"""


def _make_run_held(tmp_path: Path, sitecustomize: str) -> tuple[subprocess.Popen[bytes], Path]:
    """make run started with `sitecustomize` in its Pythons, once that has written STEP_STARTED
    (its step held there); and where its output goes."""
    started = tmp_path / "step-started"
    env = _fresh_shell_running(tmp_path, sitecustomize, STEP_STARTED=str(started))
    log_path = tmp_path / "make-run.log"
    process = _make_run(env, log_path)
    deadline = time.monotonic() + 60
    while not started.exists():
        assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.05)
    return process, log_path


@pytest.mark.timeout(120)
def test_ctrl_c_during_make_runs_start_up_stops_it_even_where_the_step_exits_cleanly(tmp_path: Path) -> None:
    # Given make run in its start-up, migrating, with a step that exits 0 on Ctrl-C
    process, log_path = _make_run_held(tmp_path, _STEP_OUTLIVING_CTRL_C)

    # When Ctrl-C is pressed
    try:
        output = _ctrl_c(process, log_path)
    finally:
        # (Come up regardless, its processes lead sessions of their own, out of make's group.)
        if sessions := _started_sessions(log_path.read_text()):
            subprocess.run(["pkill", "-KILL", "-s", ",".join(map(str, sessions.values()))], check=False)

    # Then make run stops there: nothing after the step started (the service did come up, and
    # the Ctrl-C was lost), nothing left running, the data directory free for the next one
    assert "Press Ctrl-C to stop." not in output and "started (pid=" not in output, output
    assert process.returncode != 0, output
    assert _leftovers(process.pid) == []
    assert _data_dir_free(tmp_path / "data"), output


# `manage.py migrate` held once it has started (Django and the settings loaded), so that the
# test's Ctrl-C finds it running, as it finds a first migration on a newcomer's machine.
_STEP_RUNNING = """\
import os, sys, time
if "migrate" in sys.argv[:3]:  # manage.py migrate, run as a script or by -c code
    from django.core import management
    def held(argv=None, run=management.execute_from_command_line):
        open(os.environ["STEP_STARTED"], "w").close()
        time.sleep(30)
        run(argv)
    management.execute_from_command_line = held
"""


@pytest.mark.timeout(120)
def test_ctrl_c_during_make_runs_start_up_stops_it_without_a_traceback(tmp_path: Path) -> None:
    # Given make run in its start-up, migrating
    process, log_path = _make_run_held(tmp_path, _STEP_RUNNING)

    # When Ctrl-C is pressed
    output = _ctrl_c(process, log_path)

    # Then it stops there, without a Python traceback (a KeyboardInterrupt's, a newcomer's first
    # sight of the project), nothing left running
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    assert "Press Ctrl-C to stop." not in output and process.returncode != 0, output
    assert _leftovers(process.pid) == []


# Ctrl-C in the instant after scripts/run-dev's exec of honcho, before honcho's handlers: the
# SIGINT comes as honcho is imported. The metrics directory the process was given, if any, noted.
_CTRL_C_AS_HONCHO_STARTS = """\
import importlib.abc, os, signal, sys
if sys.argv[0].endswith("honcho_start.py"):
    with open(os.environ["GIVEN_METRICS_DIR"], "w") as noted:
        noted.write(os.environ.get("METRICS_DIR", ""))
    class CtrlC(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "honcho.command":
                os.kill(os.getpid(), signal.SIGINT)
            return None
    sys.meta_path.insert(0, CtrlC())
"""


@pytest.mark.timeout(120)
def test_ctrl_c_as_make_run_hands_over_to_honcho_leaves_no_metrics_directory_and_no_traceback(
    tmp_path: Path,
) -> None:
    # Given make run's start-up done, its honcho starting
    given = tmp_path / "given-metrics-dir"
    env = _fresh_shell_running(tmp_path, _CTRL_C_AS_HONCHO_STARTS, GIVEN_METRICS_DIR=str(given))
    log_path = tmp_path / "make-run.log"

    # When Ctrl-C lands before honcho has set its handlers
    process = _make_run(env, log_path)
    try:
        process.wait(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError("make run went on:\n" + log_path.read_text()) from None

    # Then it stops, nothing started, with no traceback and no metrics directory left in memory
    output = log_path.read_text()
    assert given.exists(), output
    assert "Traceback" not in output and "started (pid=" not in output, output
    left = given.read_text()
    assert not (left and Path(left).exists()), (left, output)
    assert _leftovers(process.pid) == []
