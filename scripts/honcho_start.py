"""`make run`'s honcho (scripts/run-dev execs it): the Procfile's processes stop together however
their terminal goes, Ctrl-C, the terminal closed, or a kill of make or of scripts/run-dev.

honcho starts each process in a session of its own, out of the terminal's reach, and stops them
on SIGINT and SIGTERM alone. A closed terminal's SIGHUP killed honcho and left every process
running: the workers consuming the embedded broker, the API on its port, and the lock on
DATA_DIR released, so that the next `make run` started beside them (its broker_requeue putting
back the messages they were running) and stopped on the port taken. Here SIGHUP stops them as
SIGTERM does. And once the terminal is gone a write to it fails (EIO), which would stop honcho in
the midst of its stopping them: its lines then go nowhere, what it writes to standard error (a
traceback) to DATA_DIR/make-run-stderr.log (scripts/make_run_terminal.py).

The processes' metrics files (METRICS_ENABLED) go in memory, in a directory of DATA_DIR's own
(/dev/shm/jobapi-metrics.<a hash of DATA_DIR's real path>) unless METRICS_DIR names one: made here,
once a Ctrl-C or a kill would remove it, and removed once they have all stopped. Made by
scripts/run-dev before its exec, a Ctrl-C in the instant between the exec and honcho's handlers left
it behind. A honcho killed outright (kill -9, the OOM killer) never removes it: the next `make run`
on the same DATA_DIR, which holds DATA_DIR's lock (no other make run uses the name), empties it.
A random name of each start's own stayed for ever, one more at every such kill. /dev/shm is
everyone's: what another user may have put at the name (a file, a link, a directory not ours, or
one of ours that others may write in) is refused, never followed or emptied.

A stop that comes as the processes start (the terminal closed, Ctrl-C, a kill) waits until honcho
has heard each one start (StopOnceStarted): honcho signals a process by the pid it learns from
that word, and signalling them before it had every pid failed at the first it lacked (KeyError):
its loop ended, that process and those after it (beat, the deliveries worker) ran on, and honcho
waited on them with the lock on DATA_DIR held.

honcho killed outright (kill -9, the OOM killer), its handlers never run, left them running too,
orphaned, the API on its port: on Linux each reader honcho forks is killed as honcho dies, and
each process sent SIGTERM as its reader dies (prctl PR_SET_PDEATHSIG: DiesWithReader, _reader).
A worker's SIGTERM is its warm stop: it finishes the job it is running, however long. The lock on
DATA_DIR (scripts/run-dev's descriptor, named by --hold-fd) was held by honcho and its readers
alone (subprocess closes every other descriptor in a child), and went with them: the next `make
run` started at once, its broker_requeue put back the message of the job the old worker was still
running, and the job ran twice at once. Here every process is given the descriptor too: the lock
is released once the last of them has stopped.

Should honcho's loop raise (a bug of honcho's or of this file's), its processes are stopped as a
Ctrl-C stops them before the traceback: raised alone, it left them all running, and honcho hung at
its exit, waiting on its readers (StopOnceStarted.loop).

Usage: honcho_start.py [--hold-fd FD] -- HONCHO_ARGUMENTS...
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import hashlib
import os
import shutil
import signal
import stat
import sys
import tempfile
from collections.abc import Iterator
from types import FrameType
from typing import Any, NoReturn

try:
    from honcho import command as honcho_command
    from honcho.command import main as honcho_main
    from honcho.manager import Manager
    from honcho.process import Popen

    # Beside this file, found whether or not Python put the script's directory on sys.path
    # (PYTHONSAFEPATH=1, python -P, does not).
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from make_run_terminal import TerminalOrNothing
except KeyboardInterrupt:
    # Ctrl-C as this starts (nothing started, nothing made): a stop, not a traceback. (In the
    # interpreter's own start, before this line, Python prints one: there is no way to start it
    # without its handler but with SIGINT ignored, which would lose the Ctrl-C, make waiting on.)
    sys.exit(130)


class StopOnceStarted(Manager):
    """honcho's manager (honcho 2.0.0, pinned), whose stop waits until it knows every pid.

    honcho learns a process's pid from the "start" message its reader sends once the process runs,
    and its stop signals each process it has not heard stop by that pid: one it had not heard
    start yet raised KeyError, in the signal handler, which ended honcho's loop. The stop is now
    owed until the last pid is known, then made; the processes that did start only run a moment
    longer (the messages are sent as each process is forked)."""

    # The stop owed, forced (SIGKILL) or not (SIGTERM); None when none is.
    _owed: bool | None = None
    # Once honcho's loop has raised: it runs again only to stop what it started.
    _failed = False

    def __init__(self, *args: Any, held_fds: tuple[int, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Descriptors every process keeps open (DATA_DIR's lock), as long as it runs.
        self._held_fds = held_fds

    def loop(self) -> None:
        """honcho's loop, after which, should it raise (a bug of honcho's, or of what this file
        gives it), no process runs on. Raised alone, the exception left every process running,
        and honcho with them: its exit waits on its readers (multiprocessing joins them), which
        read on as long as their processes run. make run hung, the API on its port."""
        try:
            super().loop()
        except Exception:
            self._stop_after_failure()
            raise

    def _stop_after_failure(self) -> None:
        """Every process stopped as a Ctrl-C stops them: honcho's loop again, with nothing to
        start, sends SIGTERM, SIGKILL once KILL_WAIT has passed (_any_stopped), and returns once
        all have. Those whose reader never started (the loop raised as it started them) are left
        out: none will start, and a stop waiting for their pids waited for ever. Should the loop
        raise again, each process it knows is killed outright, and so is each reader: one with
        more lines than the queue's pipe holds, which no one reads any more, waited for ever to
        send them, and honcho's exit waits on it."""
        self._failed, self._terminating = True, False
        self._processes = {name: process for name, process in self._processes.items()
                           if getattr(process.get("process"), "pid", None) is not None}
        try:
            self.terminate()
            super().loop()
        except Exception:  # noqa: BLE001 (whatever fails it again, no process may run on)
            for process in self._processes.values():
                if process.get("pid") is not None and "returncode" not in process:
                    self._procmgr.kill(process["pid"])
                process["process"].kill()

    def _any_stopped(self) -> bool:
        # honcho's SIGKILL comes KILL_WAIT after the first process has stopped: after a failure,
        # KILL_WAIT after the SIGTERM, whether or not one stops on it.
        return self._failed or super()._any_stopped()

    def _killall(self, force: bool = False) -> None:
        if not super()._all_started():
            self._owed = force or bool(self._owed)
            return
        super()._killall(force)

    def _all_started(self) -> bool:
        # honcho's loop asks after every message it takes (and every 0.1 s without one): the
        # moment the last pid is known is the first answer True.
        started = super()._all_started()
        if started and self._owed is not None:
            force, self._owed = self._owed, None
            super()._killall(force)
        return started

    def _start(self) -> None:
        if self._failed:
            return  # the loop run again to stop them: each was started already
        for process in self._processes.values():
            process["obj"]._child_ctor = functools.partial(DiesWithReader, pass_fds=self._held_fds)
            process["obj"].run = _reader(process["obj"].run, os.getpid())
        super()._start()


# prctl(2)'s option: the signal this process gets when its parent dies.
PR_SET_PDEATHSIG = 1


def _die_with_parent(signum: int, parent: int) -> None:
    """This process is sent `signum` when its parent dies (Linux's prctl; elsewhere nothing), and
    exits at once if `parent` died already: it then has another (init), which never dies."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
        if os.getppid() != parent:  # died before the request was made
            os._exit(1)


class DiesWithReader(Popen):
    """honcho's Popen, whose process (the Procfile line's shell, then what it execs) is sent
    SIGTERM, its ordinary stop, when its reader dies: honcho killed (kill -9) left every process
    running, out of the terminal's reach in sessions of their own, the API holding its port."""

    def __init__(self, cmd: str, **kwargs: Any) -> None:
        # Its reader killed between the fork and the request, the process ran on, orphaned.
        reader = os.getpid()
        super().__init__(cmd, preexec_fn=lambda: _die_with_parent(signal.SIGTERM, reader), **kwargs)


def _reader(run: Any, honcho_pid: int) -> Any:
    """honcho's reader of one process (forked from honcho, signals ignored), killed when honcho
    dies, so that its process is stopped too (DiesWithReader)."""

    def run_dying_with_honcho(*args: Any) -> None:
        _die_with_parent(signal.SIGKILL, honcho_pid)
        run(*args)

    return run_dying_with_honcho


@contextlib.contextmanager
def _stops_held() -> Iterator[None]:
    """Ctrl-C and a kill held back (pending, not lost) for the block's length."""
    stops = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)


def _terminated(signum: int, frame: FrameType | None) -> NoReturn:
    # Until honcho's handler takes over: its exit status for a SIGTERM.
    sys.exit(143)


# The characters of DATA_DIR's hash in its metrics directory's name: 64 bits, no two DATA_DIRs' alike.
METRICS_NAME_HASH_CHARACTERS = 16


class MetricsDirectoryRefused(Exception):
    """Something make run must neither use nor empty has its metrics directory's name."""


def _metrics_directory(data_dir: str, parent: str) -> str:
    """`data_dir`'s metrics directory in `parent`, made, empty: a killed make run's is emptied,
    anything else at its name refused (MetricsDirectoryRefused)."""
    digest = hashlib.sha256(os.path.realpath(data_dir).encode()).hexdigest()[:METRICS_NAME_HASH_CHARACTERS]
    path = os.path.join(parent, f"jobapi-metrics.{digest}")
    try:
        found = os.lstat(path)  # a link's own, never what it points to
    except FileNotFoundError:
        pass
    else:
        # One others may write in may hold their files, which emptying it would delete (ours to
        # delete in our directory), and what they put there could make the emptying fail.
        others_write = found.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if not (stat.S_ISDIR(found.st_mode) and found.st_uid == os.getuid()) or others_write:
            raise MetricsDirectoryRefused(path)
        # A make run's killed outright on this DATA_DIR, its processes gone (they held the lock
        # this one holds). In /dev/shm (sticky) no other user can swap ours for a link meanwhile,
        # and rmtree follows no link inside it.
        shutil.rmtree(path)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:  # put there since, by whoever can write in `parent`
        raise MetricsDirectoryRefused(path) from None
    return path


def _arguments(arguments: list[str]) -> tuple[tuple[int, ...], list[str]]:
    """The descriptors every process keeps, and honcho's arguments; wrong usage exits 2 with the
    usage line, as argparse does (it was a traceback)."""
    parser = argparse.ArgumentParser(usage="%(prog)s [--hold-fd FD] -- HONCHO_ARGUMENTS...")
    parser.add_argument("--hold-fd", type=int, metavar="FD")
    # The separator split off here: argparse has no way to require it.
    if "--" not in arguments:
        parser.error("expected -- before honcho's arguments")
    separator = arguments.index("--")
    held_fd = parser.parse_args(arguments[:separator]).hold_fd
    return (() if held_fd is None else (held_fd,)), arguments[separator + 1:]


def main() -> int:
    held_fds, honcho_arguments = _arguments(sys.argv[1:])
    honcho_pid = os.getpid()

    def hang_up(signum: int, frame: FrameType | None) -> None:
        # honcho's process readers, forked from this one, get the terminal's SIGHUP too: they read
        # their process's output until it stops, and honcho waits for their word of its stop.
        if os.getpid() == honcho_pid:
            os.kill(honcho_pid, signal.SIGTERM)

    signal.signal(signal.SIGHUP, hang_up)
    signal.signal(signal.SIGTERM, _terminated)
    sys.stdout = TerminalOrNothing(sys.stdout)  # type: ignore[assignment]
    sys.stderr = TerminalOrNothing(sys.stderr)  # type: ignore[assignment]
    metrics_dir = None
    try:
        # Made and its name kept with the stops held: one that came between the two would leave
        # it behind; held, it comes once the name is kept, and the `finally` removes it.
        with _stops_held():
            if not os.environ.get("METRICS_DIR"):
                in_memory = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
                metrics_dir = _metrics_directory(os.environ["DATA_DIR"], in_memory)
                os.environ["METRICS_DIR"] = metrics_dir
        # honcho's `start` makes its Manager by this name.
        honcho_command.Manager = functools.partial(StopOnceStarted, held_fds=held_fds)
        honcho_main(honcho_arguments)
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else 1
    except KeyboardInterrupt:
        # Ctrl-C before honcho's handler was set: nothing was started yet.
        status = 130
    except MetricsDirectoryRefused as refused:
        print(f"{refused} is not a directory of this user's alone (a file, a link, another user's, one "
              "others may write in): make run neither uses nor empties it. Remove it, or name a directory "
              "of your own in METRICS_DIR.", file=sys.stderr)
        status = 1
    else:
        status = 0
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    # honcho exits 130 when Ctrl-C stopped them all: the way to stop, which make would report as
    # "Error 130". Otherwise (but for SIGHUP's and SIGTERM's 143) a process stopped on its own and
    # honcho exits with its code: a failure, even if that code was 0.
    return {130: 0, 0: 1}.get(status, status)


if __name__ == "__main__":
    sys.exit(main())
