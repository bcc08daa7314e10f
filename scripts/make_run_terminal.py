"""make run's standard output and error (scripts/honcho_start.py's), once its terminal is gone.

A write to a closed terminal fails (EIO), and so does one to a pipe whose reader is gone (EPIPE):
raised in honcho, it stopped honcho in the midst of its stopping the processes. From the first
failed write on, standard output (honcho's lines, the processes' with them) goes to /dev/null,
and standard error (a traceback of honcho's loop, a warning of honcho's or of honcho_start.py's)
to DATA_DIR/make-run-stderr.log, after a line naming the process and the time. Sent to /dev/null
too, it left no trace of why processes ran on after a terminal closed (a CI run of
tests/core/test_make_run.py): a traceback, if there was one, was lost.

The log is this user's alone (created 0600: a traceback may show values), appended to, so that a
later make run keeps an earlier one's, and emptied first once past LOST_TERMINAL_LOG_BYTES: it
holds the last runs' and cannot fill the disk over a long life (a run adds what honcho writes as
it stops its processes, a few tracebacks at most). The processes' lines do not go there: they
are the service's own logs, as many as it writes while it stops, and what goes wrong once the
terminal is gone is honcho's.
"""
from __future__ import annotations

import os
import stat
import time
from typing import Any, TextIO

# Where honcho's standard error goes once the terminal is gone (in DATA_DIR), and the size past
# which it is emptied before a run's lines are added.
LOST_TERMINAL_LOG = "make-run-stderr.log"
LOST_TERMINAL_LOG_BYTES = 1_000_000


class TerminalOrNothing:
    """Standard output or error, which turn to /dev/null and DATA_DIR's log at the first failed
    write or flush of either: the terminal closed (EIO), or the reader of its pipe gone (EPIPE)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError:
            self._lose_terminal()
            return len(text)
        except RuntimeError:
            # A signal handler's line (honcho's "SIGTERM received", which a closed terminal's
            # SIGHUP has it write) while this stream was mid-write: BufferedWriter refuses the
            # reentrant call. Raised in the handler, it left honcho's loop before it had stopped
            # a single process (all left running); the line is lost instead.
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError:
            self._lose_terminal()
        except RuntimeError:
            # The same handler's line flushed (print's flush=True, honcho's every line) while a
            # buffered stream was mid-write: refused as reentrant too, it would leave honcho's
            # loop as the write did. What it holds goes out with the stream's next write. (Under
            # make run, PYTHONUNBUFFERED=1, standard output has no buffer to refuse it: this is for
            # honcho_start.py run without it.)
            pass

    def _lose_terminal(self) -> None:
        # Both descriptors, whichever stream failed first: the other one's writes (a traceback on
        # standard error, written after standard output failed) go where its descriptor now does.
        for descriptor, target in ((1, os.open(os.devnull, os.O_WRONLY)), (2, _lost_terminal_log())):
            os.dup2(target, descriptor)
            os.close(target)
        # Line by line: a traceback held in a buffer is lost with a honcho killed after it, and
        # unseen while one hangs at its exit (waiting on its readers), the case to look into.
        self._stream = open(self._stream.fileno(), "w", buffering=1, errors="backslashreplace",  # noqa: SIM115
                            closefd=False)  # (for the life of the process)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _lost_terminal_log() -> int:
    """DATA_DIR's log of standard error opened to be appended to, a line naming this process and
    the time written first (emptied before if past LOST_TERMINAL_LOG_BYTES); /dev/null should it
    fail (no DATA_DIR, a full disk, a link or a FIFO at its name): a write to the stream at hand
    must not raise, nor wait."""
    try:
        # Not through a link, nor blocked on a FIFO (this runs as honcho begins stopping the
        # processes): a file other than this user's own regular one at its name is left alone.
        log = os.open(os.path.join(os.environ["DATA_DIR"], LOST_TERMINAL_LOG),
                      os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
    except (KeyError, OSError):
        return os.open(os.devnull, os.O_WRONLY)
    try:
        found = os.fstat(log)
        if not stat.S_ISREG(found.st_mode) or found.st_uid != os.getuid():
            raise OSError(f"{LOST_TERMINAL_LOG} is not a regular file of this user's")
        os.fchmod(log, 0o600)  # one made before, by another umask, too
        if found.st_size > LOST_TERMINAL_LOG_BYTES:
            os.ftruncate(log, 0)
        os.write(log, f"--- {time.strftime('%Y-%m-%d %H:%M:%S %z')} make run's honcho_start.py (pid {os.getpid()}) "
                      "lost its terminal; its standard error since:\n".encode())
    except OSError:
        os.close(log)
        return os.open(os.devnull, os.O_WRONLY)
    return log
