"""What anyone's requests make the log hold, at its default level: a client's own errors
nothing, and a request for a host this service does not serve, or a stream its full process
refuses, one line a minute. Sent in a loop (past a rate limit, for ids the client does not
have, with a wrong `Host`, streams to a full process), each made Django write a line, the
wrong host's with its traceback, as fast as they came."""
from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

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


def test_requests_for_a_host_not_served_write_one_line_a_minute_without_its_traceback(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    # Given the API as production runs it, at the default LOG_LEVEL
    log_path = tmp_path / "gunicorn.log"
    with serving(make_api(), log_path) as (client, _):
        started = log_path.stat().st_size

        # When anyone, without a key, sends 20 requests naming a host it does not serve
        answers = [requests.get(f"{client.base_url}/api/jobs/", headers={"Host": "evil.example"}, timeout=10)
                   for _ in range(20)]

        # Then each is refused, and the log says so once, in one line (for the operator whose
        # ALLOWED_HOSTS or proxy is wrong), without Django's traceback
        written = log_path.read_bytes()[started:].decode()
    assert {answer.status_code for answer in answers} == {400}
    assert [answer.json()["error"]["code"] for answer in answers][-1] == "bad_request"
    lines = written.splitlines()
    assert len(lines) == 1, written[:3000]
    assert "Invalid HTTP_HOST header: 'evil.example'" in lines[0] and "ERROR" in lines[0].upper()


def test_streams_refused_by_a_full_process_write_one_warning_a_minute(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    # Given the API as production runs it, at the default LOG_LEVEL, its process full of streams
    # (it may hold none)
    log_path = tmp_path / "gunicorn.log"
    with serving(make_api(), log_path, API_MAX_WAITERS_PER_PROCESS="0") as (client, _):
        started = log_path.stat().st_size

        # When a client opens 20 streams, reconnecting as soon as each is refused
        answers = [client.get("/api/events/", headers={"Accept": "text/event-stream"}) for _ in range(20)]

        # Then each is refused with 503, and the log says so once, at WARNING, naming the setting
        # (it was one ERROR a request: "Service Unavailable: /api/events/")
        written = log_path.read_bytes()[started:].decode()
    assert {(answer.status_code, answer.json()["error"]["code"]) for answer in answers} == {(503, "too_many_streams")}
    lines = written.splitlines()
    assert len(lines) == 1, written[:3000]
    assert "[warning" in lines[0].lower() and "API_MAX_WAITERS_PER_PROCESS" in lines[0], lines[0]
    assert "answered 503 too_many_streams" in lines[0] and "/api/events/" in lines[0], lines[0]


def test_a_query_string_of_more_parameters_than_django_parses_is_a_400_and_no_line(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    # Given the API as production runs it, at the default LOG_LEVEL
    log_path = tmp_path / "gunicorn.log"
    with serving(make_api(), log_path) as (client, _):
        started = log_path.stat().st_size
        too_many, most = "&".join(["a=1"] * 1001), "&".join(["a=1"] * 1000)

        # When anyone, without a key, sends a query string of 1,001 parameters (Django's count:
        # DATA_UPLOAD_MAX_NUMBER_FIELDS) to API views, the schema and the admin's login, and a
        # client its 1,000 to its list (a parameter it does not take, a thousand times)
        refused = [requests.get(f"{client.base_url}{path}?{too_many}", timeout=10)
                   for path in ("/api/jobs/", "/api/webhook-endpoints/", "/api/schema/", "/admin/login/")]
        listed = client.get(f"/api/jobs/?{most}")

        # Then each is refused as the client's mistake, not a 500 of the service's, and the log
        # has no line (each was an ERROR with its traceback); the 1,000 are read, and answered by
        # the list itself
        written = log_path.read_bytes()[started:].decode()
    assert [(answer.status_code, answer.json()["error"]["code"]) for answer in refused] == [(400, "invalid_query")] * 4
    assert refused[0].json()["error"]["message"] == "The query string must have at most 1000 parameters."
    assert (listed.status_code, listed.json()["error"]["code"]) == (400, "invalid_filter"), listed.text
    assert written.strip() == "", written[:2000]


def test_logins_without_their_csrf_token_write_one_line_a_minute(make_api: Callable[..., Api], tmp_path: Path) -> None:
    # Given the API as production runs it, at the default LOG_LEVEL
    log_path = tmp_path / "gunicorn.log"
    with serving(make_api(), log_path) as (client, _):
        started = log_path.stat().st_size

        # When anyone posts 20 logins to the admin without its CSRF cookie and token
        answers = [requests.post(f"{client.base_url}/admin/login/", data={"username": "a", "password": "b"},
                                 timeout=10) for _ in range(20)]

        # Then each is refused, and the log says so once (for the operator whose
        # CSRF_TRUSTED_ORIGINS or proxy is wrong: then every login is refused)
        written = log_path.read_bytes()[started:].decode()
    assert {answer.status_code for answer in answers} == {403}
    lines = written.splitlines()
    assert len(lines) == 1, written[:3000]
    assert "Forbidden (CSRF cookie not set.): /admin/login/" in lines[0], lines[0]


def test_requests_gunicorn_cannot_parse_write_one_line_a_minute(make_api: Callable[..., Api], tmp_path: Path) -> None:
    # Given the API as production runs it, at the default LOG_LEVEL
    log_path = tmp_path / "gunicorn.log"
    with serving(make_api(), log_path) as (client, _):
        started = log_path.stat().st_size

        # When anyone sends 20 requests whose request line is past gunicorn's 4 KB
        answers = [requests.get(f"{client.base_url}/api/jobs/?q={'x' * 5000}", timeout=10) for _ in range(20)]

        # Then each is answered 414, and the log says so once (it was gunicorn's WARNING each)
        written = log_path.read_bytes()[started:].decode()
    assert {answer.status_code for answer in answers} == {414}
    lines = written.splitlines()
    assert len(lines) == 1, written[:3000]
    assert "Invalid request from ip=127.0.0.1: Request Line is too large" in lines[0], lines[0]
