"""A client's own errors write nothing to the log at its default level: a client sending 4xx
requests in a loop (past its rate limit, for ids it does not have) made Django write a WARNING
line for each, as fast as it sent them."""
from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Api, serving

# It boots a gunicorn of its own.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def test_a_clients_4xx_answers_in_a_loop_write_no_warning_lines(make_api: Callable[..., Api], tmp_path: Path) -> None:
    # Given the API as production runs it, at the default LOG_LEVEL (WARNING), and a client
    # whose reads are limited to 5 a minute
    log_path = tmp_path / "gunicorn.log"
    with serving(make_api(), log_path, API_READ_RATE_PER_MINUTE="5") as (client, _):
        started = log_path.stat().st_size

        # When it asks for 40 jobs it does not have: 404 until its limit, then 429
        answers = [client.get(f"/api/jobs/{uuid.uuid4()}/").status_code for _ in range(40)]

        # Then each got its answer, and the log has no line for any of them
        written = log_path.read_bytes()[started:].decode()
    assert set(answers) == {404, 429} and answers.count(429) >= 30, answers
    assert written.strip() == "", written[:2000]
