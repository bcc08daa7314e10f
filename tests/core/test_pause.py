"""The pause after a dependency fails (core/pause.py): a call made unless paused, whose failure
starts the pause and is logged."""
from __future__ import annotations

import logging

import pytest

from core.pause import PauseAfterFailure

logger = logging.getLogger("tests.pause")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _refused() -> None:
    raise ConnectionRefusedError("the broker is down")


def test_a_call_that_returns_is_made_and_starts_no_pause() -> None:
    pause, made = PauseAfterFailure(5.0, clock=Clock()), []

    assert pause.attempt(lambda: made.append(1), logger, "Could not") is True

    assert made == [1]
    assert not pause.paused()


def test_a_call_that_raises_starts_the_pause_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    # Given a dependency that refuses the call
    clock = Clock()
    pause = PauseAfterFailure(5.0, clock=clock)

    # When the call is attempted
    with caplog.at_level(logging.WARNING, logger="tests.pause"):
        done = pause.attempt(_refused, logger, "Could not publish job %s; the sweeper will", "j-1")

    # Then it did not run, the pause holds for its seconds, and the failure is one warning of the
    # caller's logger with the traceback
    assert done is False
    assert pause.paused()
    clock.now += 5.0
    assert not pause.paused()
    [record] = caplog.records
    assert (record.name, record.levelno) == ("tests.pause", logging.WARNING)
    assert record.getMessage() == "Could not publish job j-1; the sweeper will"
    assert record.exc_info is not None and record.exc_info[0] is ConnectionRefusedError


def test_while_paused_the_call_is_not_made(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    pause, made = PauseAfterFailure(5.0, clock=clock), []
    pause.failed()

    with caplog.at_level(logging.WARNING, logger="tests.pause"):
        assert pause.attempt(lambda: made.append(1), logger, "Could not") is False

    assert made == []
    assert caplog.records == []
    clock.now += 5.0
    assert pause.attempt(lambda: made.append(1), logger, "Could not") is True
    assert made == [1]
