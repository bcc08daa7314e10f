"""scripts/honcho_start.py's standard output: a write refused as reentrant (a signal handler's
line while the stream was mid-write) loses that line, not honcho's stop."""
from __future__ import annotations

import io
import runpy

from tests.conftest import REPO


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
    terminal_or_nothing = runpy.run_path(str(REPO / "scripts" / "honcho_start.py"))["TerminalOrNothing"]
    stream = _MidWrite()
    stdout = terminal_or_nothing(stream)

    # When the handler writes its line, and honcho then its next
    written = stdout.write("SIGTERM received\n")
    stdout.write("sending SIGTERM to web.1\n")

    # Then the first is lost without raising (raised, it left honcho's loop before it had stopped
    # any process), and the terminal is kept for the next
    assert written == len("SIGTERM received\n")
    assert stream.getvalue() == "sending SIGTERM to web.1\n"
