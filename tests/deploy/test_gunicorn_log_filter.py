"""gunicorn's error log as the API's processes filter it (gunicorn.conf.py): a stream ended by its
write timeout is one WARNING line, whichever error the kernel ended the connection with; any
other socket error keeps gunicorn's ERROR and traceback. Served end to end, for the timeout
itself, in tests/jobs/test_waiting_served.py."""
from __future__ import annotations

import errno
import logging
import runpy
import sys
from collections.abc import Callable

import pytest

from tests.conftest import REPO

SOCKET_ERROR = "Socket error processing request."


@pytest.fixture(scope="module")
def stream_write_ended() -> Callable[[logging.LogRecord], bool]:
    return runpy.run_path(str(REPO / "gunicorn.conf.py"))["_stream_write_ended"]


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
