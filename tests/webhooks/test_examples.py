"""The Node example receiver accepts what we sign and refuses what we did not."""
from __future__ import annotations

import ipaddress
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import http
from webhooks.signing import headers_sign, secret_generate

REPO = Path(__file__).resolve().parents[2]
LOOPBACK = [ipaddress.ip_network("127.0.0.0/8")]


@pytest.fixture
def node_receiver() -> Iterator[tuple[str, str]]:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    secret = secret_generate()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        ["node", str(REPO / "examples" / "receiver.mjs"), "--host", "127.0.0.1", "--port", str(port),
         "--secret", secret],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        assert "Listening" in line, line
        yield f"http://127.0.0.1:{port}/", secret
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_node_receiver_verifies_our_signatures(node_receiver: tuple[str, str]) -> None:
    url, secret = node_receiver
    body = b'{"type":"job.succeeded","timestamp":"2026-01-01T00:00:00Z","data":{"id":"j","status":"SUCCESS"}}'
    signed = headers_sign(secrets_in_use=[secret_generate(), secret], message_id="msg_node",
                          timestamp=int(time.time()), body=body)

    good = http.post(url, body=body, headers=signed, timeout_seconds=5, allowed=LOOPBACK)
    tampered = http.post(url, body=body.replace(b"SUCCESS", b"FAILURE"), headers=signed,
                         timeout_seconds=5, allowed=LOOPBACK)

    assert good.status_code == 200, good
    assert tampered.status_code == 401
