"""The example receivers accept what we sign, refuse what we did not, and take every event type."""
from __future__ import annotations

import ipaddress
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from core import http
from tests.webhooks.test_signing import (
    VECTOR_MESSAGE_ID,
    VECTOR_PAYLOAD,
    VECTOR_SECRET,
    VECTOR_SIGNATURE,
    VECTOR_TIMESTAMP,
)
from webhooks.signing import headers_sign, secret_generate

REPO = Path(__file__).resolve().parents[2]
LOOPBACK = [ipaddress.ip_network("127.0.0.0/8")]
COMMANDS = {
    "python": [sys.executable, str(REPO / "examples" / "receiver.py")],
    "node": ["node", str(REPO / "examples" / "receiver.mjs")],
}


@pytest.fixture(params=sorted(COMMANDS))
def receiver(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, subprocess.Popen[bytes]]]:
    with _started(COMMANDS[request.param], secret_generate()) as started:
        yield started


@pytest.fixture(params=sorted(COMMANDS))
def vector_receiver(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, subprocess.Popen[bytes]]]:
    """A receiver given the published vector's secret (24 bytes, where ours are 32)."""
    with _started(COMMANDS[request.param], VECTOR_SECRET) as started:
        yield started


@contextmanager
def _started(command: list[str], secret: str) -> Iterator[tuple[str, str, subprocess.Popen[bytes]]]:
    if shutil.which(command[0]) is None:
        pytest.skip(f"{command[0]} is not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port), "--secret", secret],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        assert "Listening" in line, line
        yield f"http://127.0.0.1:{port}/", secret, process
    finally:
        process.terminate()
        process.wait(timeout=10)


def _send(url: str, secret: str, body: bytes, message_id: str) -> http.HttpResult:
    signed = headers_sign(secrets_in_use=[secret_generate(), secret], message_id=message_id,
                          timestamp=int(time.time()), body=body)
    return http.post(url, body=body, headers=signed, timeout_seconds=5, allowed=LOOPBACK)


def test_receiver_verifies_our_signatures(receiver: tuple[str, str, subprocess.Popen[bytes]]) -> None:
    url, secret, _ = receiver
    body = b'{"type":"job.succeeded","timestamp":"2026-01-01T00:00:00Z","data":{"id":"j","status":"SUCCESS"}}'
    signed = headers_sign(secrets_in_use=[secret_generate(), secret], message_id="msg_signed",
                          timestamp=int(time.time()), body=body)

    good = http.post(url, body=body, headers=signed, timeout_seconds=5, allowed=LOOPBACK)
    tampered = http.post(url, body=body.replace(b"SUCCESS", b"FAILURE"), headers=signed,
                         timeout_seconds=5, allowed=LOOPBACK)

    assert good.status_code == 200, good
    assert tampered.status_code == 401


def test_receiver_takes_an_endpoints_events_not_about_a_job(
    receiver: tuple[str, str, subprocess.Popen[bytes]],
) -> None:
    # An endpoint's "Send test event" (POST .../test/) carries no job: the Python receiver
    # failed on it (no answer, so the test delivery failed) and the Node one printed "undefined".
    url, secret, process = receiver
    test_event = (b'{"type":"webhook.test","timestamp":"2026-01-01T00:00:00Z",'
                  b'"data":{"endpoint_id":"e1","message":"A test event, sent on request."}}')
    disabled = (b'{"type":"endpoint.disabled","timestamp":"2026-01-01T00:00:01Z",'
                b'"data":{"id":"e2","url":"https://hooks.example.com/","reason":"failing"}}')

    answers = [_send(url, secret, test_event, "msg_test"), _send(url, secret, disabled, "msg_disabled")]

    assert [answer.status_code for answer in answers] == [200, 200], answers
    assert process.stdout is not None
    lines = [process.stdout.readline().decode().strip() for _ in answers]
    assert lines == ["2026-01-01T00:00:00Z webhook.test endpoint e1",
                     "2026-01-01T00:00:01Z endpoint.disabled endpoint e2"]


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    return http.post(url, body=body, headers=headers, timeout_seconds=5, allowed=LOOPBACK).status_code


def test_receiver_passes_and_fails_what_the_standard_webhooks_vectors_say(
    vector_receiver: tuple[str, str, subprocess.Popen[bytes]],
) -> None:
    # The vectors' must_pass and must_fail, against the example receivers (the Node one checks
    # signatures by its own code), the vector's secret decoded from its `whsec_` form.
    url, secret, _ = vector_receiver
    now = int(time.time())
    body = b'{"type":"job.succeeded","timestamp":"2026-01-01T00:00:00Z","data":{"id":"j","status":"SUCCESS"}}'

    def signed(at: int) -> dict[str, str]:
        return headers_sign(secrets_in_use=[secret], message_id=f"msg_{at}", timestamp=at, body=body)

    good = signed(now)
    other = headers_sign(secrets_in_use=[secret_generate()], message_id=good["webhook-id"], timestamp=now, body=body)
    def changed(at: int) -> dict[str, str]:
        signature = good["webhook-signature"]
        return {**good, "webhook-signature": signature[:at] + ("A" if signature[at] != "A" else "B") + signature[at + 1:]}

    rotating = {**good, "webhook-signature": f"{other['webhook-signature']} {good['webhook-signature']}"}
    published = {"webhook-id": VECTOR_MESSAGE_ID, "webhook-timestamp": str(VECTOR_TIMESTAMP),
                 "webhook-signature": VECTOR_SIGNATURE}

    assert _post(url, body, good) == 200
    assert _post(url, body, rotating) == 200
    assert _post(url, body, changed(len(good["webhook-signature"]) - 1)) == 401  # its last character
    assert _post(url, body, changed(10)) == 401  # one of the digest's
    # Outside the five minutes' tolerance by more than this test's own seconds take (a second of
    # them made now + 301 a timestamp the receiver's clock took for 300 s ahead, accepted)
    assert _post(url, body, signed(now - 330)) == 401
    assert _post(url, body, signed(now + 330)) == 401
    for missing in good:
        assert _post(url, body, {name: value for name, value in good.items() if name != missing}) == 401, missing
    # The published vector itself: signed right, but five years old.
    assert _post(url, VECTOR_PAYLOAD, published) == 401
