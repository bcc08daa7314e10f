"""HTTPS callbacks: the connection goes to the checked address while TLS (SNI and the
certificate check) uses the URL's host name; verification is never off."""
from __future__ import annotations

import ipaddress
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import http

LOOPBACK = [ipaddress.ip_network("127.0.0.0/8")]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private CA and a certificate for hooks.example signed by it."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "2", "-subj", "/CN=Test CA", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=hooks.example", cwd=d)
    (d / "ext.cnf").write_text("subjectAltName=DNS:hooks.example\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)
    return d


@pytest.fixture
def tls_server(pki: Path) -> Iterator[tuple[int, list[str]]]:
    """A one-request-at-a-time TLS server on 127.0.0.1 that records the SNI name it was sent."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki / "server.pem", pki / "server.key")
    names: list[str] = []
    context.sni_callback = lambda sock, name, ctx: names.append(name or "")  # type: ignore[assignment,misc,func-returns-value]
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(raw, server_side=True) as conn:
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    data = b""
                    while b"\r\n\r\n" not in data:
                        data += conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
            except (OSError, ssl.SSLError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port, names
    stop.set()
    listener.close()


def resolve_hooks(host: str, port: int) -> list[str]:
    assert host == "hooks.example"
    return ["127.0.0.1"]


def test_https_goes_to_the_checked_address_with_the_url_host_for_sni_and_certificate(
    pki: Path, tls_server: tuple[int, list[str]]
) -> None:
    port, names = tls_server

    result = http.post(f"https://hooks.example:{port}/in", body=b"{}", headers={}, timeout_seconds=5,
                       resolver=resolve_hooks, allowed=LOOPBACK, ca_bundle=str(pki / "ca.pem"))

    assert result.status_code == 204, result.error
    assert names == ["hooks.example"]


def test_an_untrusted_certificate_is_refused(tls_server: tuple[int, list[str]]) -> None:
    port, _ = tls_server

    result = http.post(f"https://hooks.example:{port}/in", body=b"{}", headers={}, timeout_seconds=5,
                       resolver=resolve_hooks, allowed=LOOPBACK)

    assert result.status_code is None and result.error.startswith("TLS error")


def test_a_certificate_for_another_name_is_refused(pki: Path, tls_server: tuple[int, list[str]]) -> None:
    # other.example resolves to the same checked address, but the certificate names hooks.example.
    port, _ = tls_server

    result = http.post(f"https://other.example:{port}/in", body=b"{}", headers={}, timeout_seconds=5,
                       resolver=lambda host, port: ["127.0.0.1"], allowed=LOOPBACK,
                       ca_bundle=str(pki / "ca.pem"))

    assert result.status_code is None and result.error.startswith("TLS error")
