"""The private-network guard in core/http.py: address kinds, URL form, resolution, pinning."""
from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

import pytest

from core import http
from examples.receiver import Receiver

LOOPBACK_ONLY = [ipaddress.ip_network("127.0.0.0/8")]


def resolver_of(mapping: dict[str, Sequence[str]]) -> http.Resolver:
    """A resolver for tests: a fixed host -> addresses map; anything else does not resolve."""

    def resolve(host: str, port: int) -> Sequence[str]:
        if host not in mapping:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return mapping[host]

    return resolve


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fec0::1", "site-local"),  # deprecated, still routed on some networks; Python calls it global
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("::ffff:10.0.0.1", "private"),  # IPv4-mapped IPv6 is judged as the IPv4 address
        ("100.64.0.1", "address"),  # carrier-grade NAT
        ("192.0.0.8", "address"),
        ("198.18.0.1", "address"),  # benchmarking
        ("192.0.2.1", "address"),  # documentation
    ],
)
def test_non_public_addresses_are_refused(address: str, reason: str) -> None:
    refusal = http.address_refusal(ipaddress.ip_address(address))

    assert refusal is not None and reason in refusal


@pytest.mark.parametrize("address", ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "8.8.8.8"])
def test_global_unicast_addresses_pass(address: str) -> None:
    assert http.address_refusal(ipaddress.ip_address(address)) is None


def test_allowed_networks_open_only_that_range() -> None:
    assert http.address_refusal(ipaddress.ip_address("127.0.0.1"), allowed=LOOPBACK_ONLY) is None
    assert http.address_refusal(ipaddress.ip_address("127.9.9.9"), allowed=LOOPBACK_ONLY) is None
    for other in ("::1", "10.0.0.1", "169.254.169.254", "192.168.0.1", "0.0.0.0"):
        assert http.address_refusal(ipaddress.ip_address(other), allowed=LOOPBACK_ONLY) is not None


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://example.com/", "http and https"),
        ("file:///etc/passwd", "http and https"),
        ("gopher://example.com/", "http and https"),
        ("http://user:secret@example.com/", "credentials"),
        ("http://user@example.com/", "credentials"),
        ("http://exa mple.com/", "control characters"),
        ("http://example.com/\x00", "control characters"),
        ("http://example.com/\r\nX-Injected: 1", "control characters"),
        ("http://example.com:99999/", "port"),
        ("http://example.com:0/", "port"),
        ("http:///path", "no host"),
        ("/relative/path", "http and https"),
    ],
)
def test_malformed_urls_are_refused(url: str, words: str) -> None:
    with pytest.raises(http.UrlRefused) as refused:
        http.url_check(url, resolver=resolver_of({"example.com": ["93.184.216.34"]}), allowed=[])

    assert words in refused.value.reason


def test_every_resolved_address_is_checked_not_just_the_first() -> None:
    resolver = resolver_of({"mixed.example": ["93.184.216.34", "10.0.0.5"]})

    with pytest.raises(http.UrlRefused) as refused:
        http.url_check("https://mixed.example/hook", resolver=resolver, allowed=[])

    assert "public addresses only" in refused.value.reason and "10.0.0.5" not in refused.value.reason


def test_a_host_that_does_not_resolve_is_refused() -> None:
    with pytest.raises(http.UrlRefused) as refused:
        http.url_check("https://nowhere.invalid/", resolver=resolver_of({}), allowed=[])

    assert "must resolve to public addresses only" in refused.value.reason


def test_public_urls_with_ports_ipv6_literals_and_international_names_pass() -> None:
    seen: list[tuple[str, int]] = []

    def resolver(host: str, port: int) -> list[str]:
        seen.append((host, port))
        return ["93.184.216.34"]

    target = http.url_check("https://bücher.example:8443/hooks?x=1", resolver=resolver, allowed=[])
    assert seen == [("xn--bcher-kva.example", 8443)]  # looked up as punycode
    assert (target.host, target.port, target.address) == ("xn--bcher-kva.example", 8443, "93.184.216.34")

    literal = http.url_check("http://[2606:4700:4700::1111]:8080/", resolver=resolver, allowed=[])
    assert literal.address == "2606:4700:4700::1111" and literal.port == 8080
    assert len(seen) == 1  # a literal is not resolved


def test_post_refuses_without_connecting_when_the_name_now_resolves_privately() -> None:
    # DNS changed since submission: the check runs again on every attempt.
    result = http.post(
        "http://rebind.example/",
        body=b"{}",
        headers={},
        timeout_seconds=1,
        resolver=resolver_of({"rebind.example": ["169.254.169.254"]}),
        allowed=LOOPBACK_ONLY,
    )

    assert result.refused and result.status_code is None
    assert "public addresses only" in result.error


def test_post_connects_to_the_checked_address_and_keeps_the_host_header(receiver: Receiver) -> None:
    port = int(receiver.url.rsplit(":", 1)[1].strip("/"))
    result = http.post(
        f"http://hooks.example:{port}/in",
        body=b'{"a":1}',
        headers={"Content-Type": "application/json"},
        timeout_seconds=3,
        resolver=resolver_of({"hooks.example": ["127.0.0.1"]}),
        allowed=LOOPBACK_ONLY,
    )

    assert result.ok and result.status_code == 200 and result.body_prefix == b'{"ok":true}'
    [received] = receiver.wait_for(1)
    assert received.headers["host"] == f"hooks.example:{port}"
    assert received.path == "/in" and received.body == b'{"a":1}'


def test_post_does_not_follow_redirects(make_receiver: object) -> None:
    from examples.receiver import Reply

    target = make_receiver()  # type: ignore[operator]
    redirecting = make_receiver(Reply(status=307, headers={"Location": target.url}))  # type: ignore[operator]

    result = http.post(redirecting.url, body=b"{}", headers={}, timeout_seconds=3, allowed=LOOPBACK_ONLY)

    assert result.status_code == 307 and not result.ok
    assert len(redirecting.wait_for(1)) == 1
    assert target.received == []


def test_post_keeps_only_a_prefix_of_a_large_response(make_receiver: object) -> None:
    from examples.receiver import Reply

    big = make_receiver(Reply(status=500, body=b"x" * 100_000))  # type: ignore[operator]

    result = http.post(big.url, body=b"{}", headers={}, timeout_seconds=3, allowed=LOOPBACK_ONLY)

    assert result.status_code == 500 and len(result.body_prefix) == http.RESPONSE_PREFIX_BYTES


def test_post_reports_a_network_error_as_a_result() -> None:
    # A loopback port nobody listens on (allowed by the allow-list): connection refused.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = http.post(f"http://127.0.0.1:{port}/", body=b"{}", headers={}, timeout_seconds=2, allowed=LOOPBACK_ONLY)

    assert result.status_code is None and not result.refused
    assert result.error.startswith("Connection failed")


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_network_error_says_why_without_the_urls_path_and_query(scheme: str) -> None:
    # Given a receiver URL whose path and query carry its secret (as chat webhooks' do), on a
    # loopback port nobody listens on
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"{scheme}://127.0.0.1:{port}/services/T0/B0/{'s3cret' * 60}?token=t0ken"

    result = http.post(url, body=b"{}", headers={}, timeout_seconds=2, allowed=LOOPBACK_ONLY)

    # Then the error (kept in the attempt log, the endpoint's last error and the log line) names
    # the cause, and nothing of the path or query
    assert result.error == "Connection failed: [Errno 111] Connection refused", result.error
