"""Whatever a receiver sends back, `core.http.post` returns an HttpResult, within the attempt's
limit (the timeout plus core.deadlines.SLACK_SECONDS), with nothing a database could refuse."""
from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Iterator

import pytest

from core import deadlines, http
from tests.fakes.hostile_receiver import MODES, HostileReceiver
from webhooks import telemetry

LOOPBACK_ONLY = [ipaddress.ip_network("127.0.0.0/8")]
TIMEOUT_SECONDS = 1.5
LIMIT_SECONDS = TIMEOUT_SECONDS + deadlines.SLACK_SECONDS

# What each mode is recorded as: a status code, or an error of telemetry's outcome kind.
EXPECTED: dict[str, int | str] = {
    "ok": 200,
    "drip": 200,  # the status answered; the body is cut at the limit
    "drip-headers": "timeout",
    "drip-tls": "timeout",  # over http: a status line that never ends
    "hang": "timeout",
    "reset": "connection_error",
    "close": "connection_error",
    "garbage-status": "connection_error",
    "status-999": 999,
    "status-0": "connection_error",
    "huge-headers": "connection_error",
    "many-headers": "connection_error",
    "non-ascii-headers": 503,
    "repeated-headers": 429,
    "malformed-header": 500,
    "conflicting-length": "error",
    "redirect": 307,
    "huge-body": 200,
    "gzip-bomb": 200,
    "bad-chunked": 200,
    "endless-continue": "timeout",
    "binary-body": 500,
    "interim": 500,  # the answer after the interim ones
}


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileReceiver]:
    with HostileReceiver() as receiver:
        yield receiver


def post(url: str) -> http.HttpResult:
    return http.post(url, body=b'{"type":"test"}', headers={"webhook-id": "msg_1"}, timeout_seconds=TIMEOUT_SECONDS,
                     allowed=LOOPBACK_ONLY)


def assert_storable(result: http.HttpResult) -> None:
    assert "\x00" not in result.error
    assert len(result.error) <= 500
    assert len(result.body_prefix) <= http.RESPONSE_PREFIX_BYTES
    assert result.status_code is None or 100 <= result.status_code <= 999


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_is_an_outcome_within_the_limit(hostile: HostileReceiver, mode: str) -> None:
    started = time.monotonic()

    result = post(hostile.url(mode))

    elapsed = time.monotonic() - started
    assert elapsed <= LIMIT_SECONDS, (mode, elapsed, result)
    assert_storable(result)
    expected = EXPECTED.get(mode, 503)  # retry-after-*: a 503, whatever the header's form
    if isinstance(expected, int):
        assert result.status_code == expected, result
    else:
        assert result.status_code is None and telemetry.attempt_outcome(result) == expected, result


def test_a_dripped_body_ends_at_the_limit_with_what_arrived(hostile: HostileReceiver) -> None:
    result = post(hostile.url("drip"))

    assert result.status_code == 200
    assert 0 < len(result.body_prefix) <= TIMEOUT_SECONDS + 1
    assert result.duration_ms >= TIMEOUT_SECONDS * 1000 - 50


def test_a_compressed_body_is_kept_as_sent_never_inflated(hostile: HostileReceiver) -> None:
    result = post(hostile.url("gzip-bomb"))

    assert result.body_prefix[:2] == b"\x1f\x8b"  # gzip's magic: the raw bytes
    assert len(result.body_prefix) == http.RESPONSE_PREFIX_BYTES


def test_a_dripped_tls_handshake_ends_at_the_limit(hostile: HostileReceiver) -> None:
    started = time.monotonic()

    result = post(hostile.url("ok", scheme="https"))

    assert time.monotonic() - started <= LIMIT_SECONDS
    assert result.status_code is None and telemetry.attempt_outcome(result) == "timeout", result


def test_a_resolver_that_never_answers_ends_at_the_limit() -> None:
    never = threading.Event()

    def hung_resolver(host: str, port: int) -> list[str]:
        never.wait(10)
        return ["127.0.0.1"]

    started = time.monotonic()
    try:
        result = http.post("http://hooks.example/in", body=b"{}", headers={}, timeout_seconds=0.5,
                           resolver=hung_resolver, allowed=LOOPBACK_ONLY)
    finally:
        never.set()

    assert time.monotonic() - started <= 0.5 + deadlines.SLACK_SECONDS
    assert not result.refused and telemetry.attempt_outcome(result) == "timeout", result


def test_hostile_answers_side_by_side_each_end_in_time(hostile: HostileReceiver) -> None:
    # Every mode at once, from threads (as a batch sends): each request has its own deadline.
    results: dict[str, http.HttpResult] = {}
    started = time.monotonic()
    threads = [threading.Thread(target=lambda m=mode: results.__setitem__(m, post(hostile.url(m)))) for mode in MODES]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert time.monotonic() - started <= LIMIT_SECONDS + 1  # the bombs' bytes take a moment on 2 cores
    assert set(results) == set(MODES)
    assert results["ok"].status_code == 200


def test_an_answer_with_malformed_headers_logs_nothing_of_the_receivers_url(
    hostile: HostileReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a receiver's URL that carries its token, when it answers with header lines that are
    # not headers
    with caplog.at_level(logging.INFO):
        result = post(hostile.url("malformed-header") + "?token=s3cr3t")

    # Then the answer is recorded, and no line of the log names the URL
    assert result.status_code == 500
    assert [record.getMessage() for record in caplog.records if "s3cr3t" in record.getMessage()] == []
