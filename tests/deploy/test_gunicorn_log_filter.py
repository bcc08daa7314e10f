"""gunicorn's error log as the API's processes filter it (core.log_volume.StreamWriteEnded, which
gunicorn.conf.py adds): streams ended by their write timeout are one WARNING line at most a minute
per process, saying how many, whichever error the kernel ended each connection with; any other
socket error keeps gunicorn's ERROR and traceback. Served end to end, for the timeout itself, in tests/jobs/test_waiting_served.py."""
from __future__ import annotations

import errno
import logging
import sys
import time
from collections.abc import Callable

import pytest

from core.log_volume import StreamWriteEnded

SOCKET_ERROR = "Socket error processing request."


@pytest.fixture
def stream_write_ended() -> Callable[[logging.LogRecord], bool]:
    """The filter as a worker process gets it."""
    return StreamWriteEnded().filter


def _record(error: OSError) -> logging.LogRecord:
    try:
        raise error
    except OSError:
        return logging.LogRecord("gunicorn.error", logging.ERROR, __file__, 1, SOCKET_ERROR, None, sys.exc_info())


@pytest.mark.parametrize("code", [errno.ETIMEDOUT, errno.EAGAIN, errno.EHOSTUNREACH, errno.ENETUNREACH],
                         ids=errno.errorcode.get)
def test_a_write_timed_out_is_one_warning_line(stream_write_ended: Callable[[logging.LogRecord], bool],
                                               code: int) -> None:
    # Given gunicorn's line for a connection the write timeout ended, with the kernel's error:
    # its own, or, where the network said the client unreachable meanwhile, that one
    record = _record(OSError(code, "ended"))

    # When the filter sees it
    kept = stream_write_ended(record)

    # Then it is one WARNING line, without a traceback
    assert kept
    assert (record.levelno, record.levelname) == (logging.WARNING, "WARNING")
    assert record.getMessage().startswith("Closed a connection whose client read nothing for the write timeout")
    assert record.exc_info is None


def test_any_other_socket_error_keeps_its_error_and_traceback(
    stream_write_ended: Callable[[logging.LogRecord], bool],
) -> None:
    record = _record(OSError(errno.EIO, "input/output error"))

    assert stream_write_ended(record)

    assert (record.levelno, record.getMessage()) == (logging.ERROR, SOCKET_ERROR)
    assert record.exc_info is not None


def test_streams_ended_in_a_row_are_one_line_a_minute_saying_how_many() -> None:
    # Given the filter, its interval at half a second
    stream_write_ended = StreamWriteEnded(seconds=0.5).filter

    # When a client's 20 streams end by the write timeout at once, then one more after the interval
    at_once = [record for record in (_record(OSError(errno.ETIMEDOUT, "ended")) for _ in range(20))
               if stream_write_ended(record)]
    time.sleep(0.6)
    after = _record(OSError(errno.EAGAIN, "ended"))

    # Then the first is one WARNING line, the next 19 none, and the one after the interval one
    # line counting them with it
    assert [record.levelname for record in at_once] == ["WARNING"]
    assert at_once[0].getMessage().endswith("(1 so closed since this process's previous such line)")
    assert stream_write_ended(after)
    assert after.getMessage().endswith("(20 so closed since this process's previous such line)")
