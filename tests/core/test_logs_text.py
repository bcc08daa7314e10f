"""What a client's text does to a log line (core/logs.py): in either format, a value, a message
or an exception's text holding escape sequences or line breaks stays on its line and reaches no
terminal as control characters; letters of any script read as they are."""
from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from core import logs

# What a receiver, a model provider or a job's payload could send: a terminal's clear-screen and
# colour sequences, a carriage return, a line break followed by a log line of its own, a vertical
# tab, a line separator and a right-to-left override.
ESCAPES = "\x1b[2J\x1b[31mred\x1b[0m"
FORGED = "2026-01-01T00:00:00.000000Z [error    ] forged"
HOSTILE = f"{ESCAPES}\r\n{FORGED}\x0b\u2028\u202e"
ESCAPED = "\\x1b[2J\\x1b[31mred\\x1b[0m"
READABLE = "Zürich-日本語-ελληνικά"


@pytest.fixture
def written(request: pytest.FixtureRequest) -> Iterator[tuple[str, io.StringIO]]:
    """A logger of its own whose lines go, in the format asked, to a buffer."""
    config = logs.logging_config(level="WARNING", json=request.param == "json")["formatters"]["structured"]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=config["foreign_pre_chain"], processors=config["processors"]
    )
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(formatter)
    name = f"test-logs-text-{uuid.uuid4().hex[:8]}"
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    logger.propagate = False
    yield name, buffer
    logger.removeHandler(handler)


def _write(name: str) -> None:
    """One line of each kind that may carry a client's text."""
    logs.get_logger(name).warning("webhook delivery given up", error=HOSTILE, reason=ESCAPES, receiver=READABLE)
    logging.getLogger(name).warning("Job 1: model call try 1 failed (%s)", HOSTILE)
    try:
        raise ValueError(HOSTILE)
    except ValueError:
        logging.getLogger(name).warning("Job 1 step 0 raised", exc_info=True)


@pytest.mark.parametrize("written", ["text"], indirect=True)
def test_the_text_format_escapes_control_characters_and_forges_no_line(written: tuple[str, io.StringIO]) -> None:
    name, buffer = written

    _write(name)

    lines = buffer.getvalue().split("\n")[:-1]
    # Three lines of the log (each starting with its time), the traceback's indented under its own
    starts = [line for line in lines if not line.startswith(" ")]
    messages = ("webhook delivery given up", "Job 1: model call try 1 failed", "Job 1 step 0 raised")
    assert len(starts) == 3 and all(message in line for message, line in zip(messages, starts, strict=True))
    assert not any(line.startswith(FORGED) for line in lines)
    assert all(line.isprintable() for line in lines)
    assert f"reason={ESCAPED} receiver={READABLE}" in starts[0]
    assert f"({ESCAPED}\\r\\n{FORGED}\\x0b\\u2028\\u202e)" in starts[1]
    assert lines[-1] == f"    {FORGED}\\x0b\\u2028\\u202e"


@pytest.mark.parametrize("written", ["text"], indirect=True)
def test_the_text_format_tells_a_clients_backslashes_from_its_escapes(written: tuple[str, io.StringIO]) -> None:
    # Given a client's text holding both an ESC and the four characters `\x1b` (and a `\n`)
    name, buffer = written
    sent = "\x1b[2J-\\x1b[2J\\n"

    # When a line quotes it in its message, in a value written as it is and in one quoted, and
    # an exception's message holds it
    logs.get_logger(name).warning(f"model said {sent}", error=sent, reason=f"a {sent}")
    try:
        raise ValueError(sent)
    except ValueError:
        logging.getLogger(name).warning("Job 1 step 0 raised", exc_info=True)

    # Then each ESC reads `\x1b` and each backslash the client sent `\\`, as repr writes them
    # in the value it quotes
    lines = buffer.getvalue().split("\n")[:-1]
    escaped = "\\x1b[2J-\\\\x1b[2J\\\\n"
    assert f"model said {escaped}" in lines[0]
    assert f"error={escaped}" in lines[0] and f"reason='a {escaped}'" in lines[0]
    assert lines[-1] == f"    ValueError: {escaped}"
    assert all(line.isprintable() for line in lines)


@pytest.mark.parametrize("written", ["json"], indirect=True)
def test_the_json_format_holds_the_same_text_escaped_on_one_line_each(written: tuple[str, io.StringIO]) -> None:
    name, buffer = written

    _write(name)

    lines: list[dict[str, Any]] = [json.loads(line) for line in buffer.getvalue().split("\n")[:-1]]
    assert [line["message"] for line in lines] == [
        "webhook delivery given up", f"Job 1: model call try 1 failed ({HOSTILE})", "Job 1 step 0 raised"]
    assert lines[0]["error"] == HOSTILE and lines[0]["receiver"] == READABLE
    assert lines[2]["exception"].endswith(f"ValueError: {HOSTILE}")
    assert buffer.getvalue().isascii() and "\x1b" not in buffer.getvalue()
