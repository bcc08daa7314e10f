"""scripts/honcho_start.py's standard output: a write refused as reentrant (a signal handler's
line while the stream was mid-write) loses that line, not honcho's stop; a process whose reader
died as it started never runs, orphaned; and its usage."""
from __future__ import annotations

import io
import os
import runpy
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

HONCHO_START = REPO / "scripts" / "honcho_start.py"


class _MidWrite(io.StringIO):
    """A stream whose next write comes while it is mid-write, as from a signal handler."""

    def __init__(self) -> None:
        super().__init__()
        self.reentered = True

    def write(self, text: str) -> int:
        if self.reentered:
            self.reentered = False
            raise RuntimeError("reentrant call inside <_io.BufferedWriter name='<stdout>'>")
        return super().write(text)


def test_a_line_written_while_the_stream_is_mid_write_is_lost_and_the_rest_written() -> None:
    # Given standard output as honcho_start.py wraps it, mid-write when honcho's SIGTERM handler
    # writes "SIGTERM received"
    terminal_or_nothing = runpy.run_path(str(HONCHO_START))["TerminalOrNothing"]
    stream = _MidWrite()
    stdout = terminal_or_nothing(stream)

    # When the handler writes its line, and honcho then its next
    written = stdout.write("SIGTERM received\n")
    stdout.write("sending SIGTERM to web.1\n")

    # Then the first is lost without raising (raised, it left honcho's loop before it had stopped
    # any process), and the terminal is kept for the next
    assert written == len("SIGTERM received\n")
    assert stream.getvalue() == "sending SIGTERM to web.1\n"


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
