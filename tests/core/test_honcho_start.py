"""scripts/honcho_start.py's standard output: a write refused as reentrant (a signal handler's
line while the stream was mid-write) loses that line, not honcho's stop; a process whose reader
died as it started never runs, orphaned; once its terminal is closed, a raised loop's traceback
is kept in DATA_DIR's log; DATA_DIR's metrics directory, a killed make run's emptied, anything
else at its name refused; and its usage."""
from __future__ import annotations

import contextlib
import io
import os
import pty
import re
import runpy
import select
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

HONCHO_START = REPO / "scripts" / "honcho_start.py"
MAKE_RUN_TERMINAL = REPO / "scripts" / "make_run_terminal.py"


@pytest.fixture(autouse=True)
def _scripts_first_on_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # honcho_start.py imports its sibling make_run_terminal.py as Python run on a script lets it,
    # its directory first on sys.path: runpy.run_path, here, puts it there only so.
    monkeypatch.syspath_prepend(str(REPO / "scripts"))


class _MidWrite(io.StringIO):
    """A stream whose next write and flush come while it is mid-write, as from a signal handler."""

    def __init__(self) -> None:
        super().__init__()
        self.reentered = {"write", "flush"}

    def write(self, text: str) -> int:
        self._refuse_once("write")
        return super().write(text)

    def flush(self) -> None:
        self._refuse_once("flush")
        super().flush()

    def _refuse_once(self, call: str) -> None:
        if call in self.reentered:
            self.reentered.remove(call)
            raise RuntimeError("reentrant call inside <_io.BufferedWriter name='<stdout>'>")


def test_a_line_written_while_the_stream_is_mid_write_is_lost_and_the_rest_written() -> None:
    # Given standard output as honcho_start.py wraps it, mid-write when honcho's SIGTERM handler
    # writes "SIGTERM received"
    terminal_or_nothing = runpy.run_path(str(MAKE_RUN_TERMINAL))["TerminalOrNothing"]
    stream = _MidWrite()
    stdout = terminal_or_nothing(stream)

    # When the handler prints its line as honcho prints every line (print's flush=True), and
    # honcho then its next
    print("SIGTERM received", file=stdout, flush=True)
    print("sending SIGTERM to web.1", file=stdout, flush=True)

    # Then the first is lost without raising, its write and its flush alike (raised, either left
    # honcho's loop before it had stopped any process), and the terminal is kept for the next
    assert stream.getvalue() == "\nsending SIGTERM to web.1\n"


# honcho_start.py run with honcho's loop made to raise: its printer at one line ("once"), or at
# every line from it on, its own "sending SIGTERM" lines too ("on"); or the start of the second
# process's reader ("start", as a fork refused for want of memory).
FAILING_LOOP = """
import multiprocessing, os, runpy, sys
from honcho import printer
written, started, failing, mode = printer.Printer.write, multiprocessing.Process.start, [], sys.argv[3]
def write(self, message):
    if mode != "start" and (isinstance(message.data, bytes) and b"the line honcho fails at" in message.data
                            or failing[:1] == ["on"]):
        failing.append(mode)
        raise ValueError("honcho's loop failed")
    return written(self, message)
def start(self):
    if mode == "start" and failing:
        raise ValueError("honcho's loop failed")
    failing.append("a reader")
    started(self)
printer.Printer.write, multiprocessing.Process.start = write, start
sys.argv = [sys.argv[1], "--", "-f", sys.argv[2], "-e", "/dev/null", "start"]
sys.path[0] = os.path.dirname(sys.argv[0])  # as Python runs a script: its directory first
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize(("failing", "started"), [("once", 2), ("on", 2), ("start", 1)])
def test_when_honchos_loop_raises_every_process_is_stopped_and_honcho_exits_with_its_traceback(
    failing: str, started: int, tmp_path: Path,
) -> None:
    # Given honcho_start.py running two processes that ignore SIGTERM, one of which writes a line
    # at which honcho's loop raises, then more lines than honcho's queue holds unread; or whose
    # second fails to start
    (tmp_path / "failing_loop.py").write_text(FAILING_LOOP)
    (tmp_path / "Procfile").write_text(
        "writer: trap '' TERM; sleep 1; echo the line honcho fails at; seq 100000; exec sleep 300\n"
        "other: trap '' TERM; exec sleep 300\n"
    )
    env = {**os.environ, "DATA_DIR": str(tmp_path), "METRICS_DIR": str(tmp_path)}

    # When it runs to that failure
    try:
        run = subprocess.run([sys.executable, str(tmp_path / "failing_loop.py"), str(HONCHO_START),
                              str(tmp_path / "Procfile"), failing], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=30, check=False)
        exited = True
    except subprocess.TimeoutExpired as hung:
        run, exited = hung, False
    pids = [int(pid) for pid in re.findall(r"started \(pid=(\d+)\)", str(run.stdout))]
    left = [pid for pid in pids if _running(pid)]
    for pid in left:
        os.killpg(pid, signal.SIGKILL)

    # Then every process it started is stopped (killed, KILL_WAIT after the SIGTERM they ignore)
    # and honcho exits, failing, with the exception's traceback (it hung, waiting on its readers,
    # each process running; or, its reader's queue full, once they were killed; or waiting for
    # the pid of a process it never started)
    assert exited and len(pids) == started and left == [], (run.stdout[-2000:], run.stderr)
    assert run.returncode == 1 and "ValueError: honcho's loop failed" in run.stderr, run.stderr


@pytest.mark.parametrize("before", ["no log", "a previous run's log", "a log past its size", "a FIFO", "a link"])
def test_when_honchos_loop_raises_after_its_terminal_closed_its_traceback_is_kept_in_data_dirs_log(
    before: str, tmp_path: Path,
) -> None:
    # Given honcho_start.py in a terminal, running a process that writes, on the SIGTERM a closed
    # terminal has honcho send it, the line at which honcho's loop raises; and in DATA_DIR, no
    # log of its standard error yet, a previous run's (made by another umask), one past the size
    # at which it is emptied, or at its name a FIFO no one reads or a link to another large file
    log, elsewhere = tmp_path / "make-run-stderr.log", tmp_path / "elsewhere"
    past_size = "x" * (runpy.run_path(str(MAKE_RUN_TERMINAL))["LOST_TERMINAL_LOG_BYTES"] + 1)
    if before == "a previous run's log":
        log.write_text("a previous run's traceback\n")
        log.chmod(0o644)
    elif before == "a log past its size":
        log.write_text(past_size)
    elif before == "a FIFO":
        os.mkfifo(log)
    elif before == "a link":
        elsewhere.write_text(past_size)
        log.symlink_to(elsewhere)
    (tmp_path / "failing_loop.py").write_text(FAILING_LOOP)
    (tmp_path / "Procfile").write_text(
        "writer: trap 'echo the line honcho fails at' TERM; while :; do sleep 0.1; done\n"
        "other: exec sleep 300\n"
    )
    env = {**os.environ, "DATA_DIR": str(tmp_path), "METRICS_DIR": str(tmp_path)}
    honcho, terminal = pty.fork()
    if honcho == 0:  # pragma: no cover (honcho_start.py, leading the terminal's session)
        try:
            os.chdir(tmp_path)
            os.execve(sys.executable, [sys.executable, str(tmp_path / "failing_loop.py"), str(HONCHO_START),
                                       str(tmp_path / "Procfile"), "once"], env)
        finally:
            os._exit(127)
    output = b""
    deadline = time.monotonic() + 30
    while len(re.findall(rb"started \(pid=\d+\)", output)) < 2 and time.monotonic() < deadline:
        if select.select([terminal], [], [], 0.2)[0]:
            output += os.read(terminal, 65536)
    pids = [int(pid) for pid in re.findall(rb"started \(pid=(\d+)\)", output)]

    # When the terminal is closed (its SIGHUP stops honcho's processes, and its writes fail from
    # then on), and honcho's loop raises as they stop
    os.close(terminal)
    exit_code = _exit_code(honcho, timeout=30)
    left = [pid for pid in pids if _running(pid)]
    for pid in left:
        os.killpg(pid, signal.SIGKILL)

    # Then honcho has stopped every process and exited, failing, its traceback in DATA_DIR's log
    # after a line naming the run (it went to /dev/null with the terminal), the log made this
    # user's alone, a previous run's lines kept before it unless past the log's size
    assert len(pids) == 2 and left == [] and exit_code == 1, (output.decode(errors="replace"), exit_code)
    if before in ("a FIFO", "a link"):
        # (a FIFO blocked honcho's stop before it signalled a process; a link's file was emptied)
        assert stat.S_ISFIFO(log.lstat().st_mode) if before == "a FIFO" else elsewhere.read_text() == past_size
        return
    written = log.read_text()
    assert "Traceback" in written and "ValueError: honcho's loop failed" in written, written[-3000:]
    assert re.search(r"^--- .* \(pid \d+\) lost its terminal", written, re.MULTILINE), written[-3000:]
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert written.startswith("a previous run's traceback\n---") == (before == "a previous run's log"), written[:3000]
    assert "xxx" not in written, written[:200]


def _exit_code(pid: int, *, timeout: float) -> int | None:
    """The exit code of the child `pid`, killed if it has not exited within `timeout` (None)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waited, status = os.waitpid(pid, os.WNOHANG)
        if waited:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has stopped: orphaned once its reader was killed, it waits for init to reap it.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def test_a_process_whose_reader_died_before_it_asked_to_die_with_it_never_runs(tmp_path: Path) -> None:
    # Given a Procfile process started as honcho_start.py starts it, whose reader (honcho killed)
    # died between the fork and its request to die with it: its parent is then another process
    die_with_parent = runpy.run_path(str(HONCHO_START))["_die_with_parent"]
    dead_reader = os.getppid()  # any pid but the process's parent, this one
    ran = tmp_path / "ran"

    # When it starts
    process = subprocess.Popen(
        # As the reader does it: no other thread in this process to hold a lock across the fork.
        ["touch", str(ran)], preexec_fn=lambda: die_with_parent(signal.SIGTERM, dead_reader),  # noqa: PLW1509
    )

    # Then it exits before its command runs (it ran on, orphaned, no parent left to die with)
    assert process.wait(timeout=30) != 0
    assert not ran.exists()


def test_a_killed_make_runs_metrics_directory_is_emptied_and_made_its_next_start_on_the_same_data(
    tmp_path: Path,
) -> None:
    # Given the metrics directory of a make run on a DATA_DIR, left with its files (its honcho
    # killed outright, which removes nothing)
    metrics_directory = runpy.run_path(str(HONCHO_START))["_metrics_directory"]
    in_memory, data_dir = tmp_path / "shm", tmp_path / "data"
    in_memory.mkdir()
    data_dir.mkdir()
    left = Path(metrics_directory(str(data_dir), str(in_memory)))
    (left / "web").mkdir()
    (left / "web" / "counter_1234.db").write_text("a dead process's")

    # When the next make run on that DATA_DIR, named by a link to it, makes its own
    (tmp_path / "link-to-data").symlink_to(data_dir)
    made = Path(metrics_directory(str(tmp_path / "link-to-data"), str(in_memory)))

    # Then it is the same directory, emptied: one directory a DATA_DIR however often its make run
    # is killed (each made one of its own, left for ever); another DATA_DIR has another
    assert made == left and list(made.iterdir()) == []
    other = tmp_path / "other-data"
    other.mkdir()
    assert Path(metrics_directory(str(other), str(in_memory))) != made
    assert len(list(in_memory.iterdir())) == 2


def _plant(kind: str, name: Path, tmp_path: Path) -> Path:
    """Puts at `name` what make run must neither use nor empty; returns the file there (or in
    the directory a link points to) that it must leave as it is."""
    if kind == "a file":
        name.write_text("someone's")
        return name
    directory = name  # another user's directory (its owner, as the process sees it: the test's)
    if kind == "a link to a directory":
        directory = tmp_path / "linked"
        name.symlink_to(directory)
    directory.mkdir()
    if kind == "a directory of this user's that others may write in":
        directory.chmod(0o777)  # the file in it another user's, this user's to delete
    (directory / "file").write_text("someone's")
    return directory / "file"


@pytest.mark.parametrize("kind", [
    "a link to a directory", "a file", "another user's directory",
    "a directory of this user's that others may write in",
])
def test_make_run_refuses_a_metrics_directory_name_that_is_not_its_own_and_leaves_it(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given, at the name of a DATA_DIR's metrics directory (/dev/shm is everyone's), something
    # that is not a directory of this user's
    namespace = runpy.run_path(str(HONCHO_START))
    in_memory, data_dir = tmp_path / "shm", tmp_path / "data"
    in_memory.mkdir()
    data_dir.mkdir()
    name = Path(namespace["_metrics_directory"](str(data_dir), str(in_memory)))
    name.rmdir()
    kept = _plant(kind, name, tmp_path)
    if kind == "another user's directory":
        monkeypatch.setattr(os, "getuid", lambda: name.stat().st_uid + 1)

    # When make run makes its metrics directory
    with pytest.raises(namespace["MetricsDirectoryRefused"]):
        namespace["_metrics_directory"](str(data_dir), str(in_memory))

    # Then it is refused, and what is there, or what a link points to, is left as it was: emptied,
    # a link's directory would lose its files, another user's theirs (in a directory others may
    # write in, a file may be another user's, and what they put there could make the emptying fail)
    assert kept.read_text() == "someone's"
    assert os.path.lexists(name)


def test_honcho_start_refuses_a_link_at_the_metrics_directorys_name_saying_what_to_do(tmp_path: Path) -> None:
    # Given a link at the name of a DATA_DIR's metrics directory in memory, to a directory of files
    # (where honcho_start.py makes it)
    in_memory = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    name = Path(runpy.run_path(str(HONCHO_START))["_metrics_directory"](str(data_dir), in_memory))
    name.rmdir()
    kept = _plant("a link to a directory", name, tmp_path)
    env = {key: value for key, value in os.environ.items() if key != "METRICS_DIR"}
    try:
        # When make run hands over to honcho on that DATA_DIR
        run = subprocess.run([sys.executable, str(HONCHO_START), "--", "-f", "Procfile", "check"], cwd=REPO,
                             env={**env, "DATA_DIR": str(data_dir)}, capture_output=True, text=True, timeout=60,
                             check=False)
    finally:
        name.unlink()

    # Then it stops, saying what is wrong and what to do, nothing started, the files left
    assert run.returncode == 1, run
    assert f"{name} is not a directory of this user's alone" in run.stderr, run.stderr
    assert "METRICS_DIR" in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert kept.read_text() == "someone's"


@pytest.mark.parametrize("arguments", [
    [], ["--hold-fd"], ["--hold-fd", "nine", "--", "start"], ["--hold-fd", "9", "start"],
    ["--keep-fd", "9", "--", "start"],
])
def test_honcho_start_used_wrongly_prints_its_usage_and_exits_2(arguments: list[str]) -> None:
    # When honcho_start.py is given arguments it does not take
    run = subprocess.run([sys.executable, str(HONCHO_START), *arguments], cwd=REPO, capture_output=True, text=True,
                         timeout=60, check=False)

    # Then it says how it is used, as a command does (it was a traceback: IndexError, ValueError,
    # AssertionError), and starts nothing
    assert run.returncode == 2, run
    assert run.stderr.startswith("usage: honcho_start.py [--hold-fd FD] -- HONCHO_ARGUMENTS...\n"), run.stderr
    assert "Traceback" not in run.stderr and run.stdout == "", run
