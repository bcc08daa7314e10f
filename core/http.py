"""The one outbound HTTP client: timeouts, no redirects, and the private-network guard.

Every request to a URL someone else chose (webhook callbacks) goes through `post`, which:
1. checks the URL's form (http/https, no credentials, no control characters, a valid port);
2. resolves the host once (through an injectable resolver) and checks *every* address: only
   global unicast addresses pass, unless one falls in `WEBHOOK_ALLOWED_NETWORKS`;
3. connects to the address it checked (so DNS cannot change between the check and the
   connection), with the URL's host in the `Host` header and as the TLS SNI/certificate name,
   and keeps it alive for the next request checked to that same address (`_SessionCache`);
4. never follows a redirect and never uses environment proxies;
5. returns an `HttpResult` (status, first bytes of the body, duration or the network error)
   instead of raising for HTTP or network failures.

Why not `requests-hardened` itself (it is in requirements for its blocked-range list): its
filter has a loopback switch but no CIDR allow-list, calls `socket.getaddrinfo` directly (no
injectable resolver for tests), and checks only the first address the resolver returns. The
pinning technique below (rewrite the pool's host, keep `Host`, `assert_hostname` and
`server_hostname`) is the one its `IPFilterAdapter` uses.
"""
from __future__ import annotations

import http.client
import ipaddress
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import idna
import requests
import urllib3
from django.conf import settings
from requests.adapters import HTTPAdapter
from requests_hardened.ip_filter import EXTRA_BLOCKED_NET_RANGES

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# (ASCII host name, port) -> the addresses it resolves to, as strings; raises OSError when it
# does not resolve.
Resolver = Callable[[str, int], Sequence[str]]

# How much of a response body is kept: enough to see an error message, not a whole page.
RESPONSE_PREFIX_BYTES = 4096
# The cloud metadata address gets its own sentence: it is the classic SSRF target.
_METADATA_ADDRESSES = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


def system_resolve(host: str, port: int) -> list[str]:
    """The operating system's resolver (what production uses)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


# Tests replace this (monkeypatch) to map host names to addresses without DNS.
DEFAULT_RESOLVER: Resolver = system_resolve


class UrlRefused(Exception):
    """The URL may not be called; `reason` is a sentence for the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (`address`) and what to call it (`host`)."""

    url: str
    scheme: str
    host: str  # ASCII (punycode) host name or the IP literal, without brackets
    port: int
    address: str  # the checked IP address the connection goes to


@dataclass
class HttpResult:
    """What one request did: a status (any, 3xx included) or a network error, never both."""

    status_code: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body_prefix: bytes = b""
    duration_ms: int = 0
    error: str = ""
    # True when the guard refused the URL and no connection was attempted.
    refused: bool = False

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def allowed_networks() -> list[IPNetwork]:
    return [ipaddress.ip_network(value, strict=False) for value in settings.WEBHOOK_ALLOWED_NETWORKS]


def address_refusal(address: IPAddress, *, allowed: Iterable[IPNetwork] = ()) -> str | None:
    """Why `address` may not be reached (a phrase such as "a private address"), or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # ::ffff:10.0.0.1 reaches 10.0.0.1: judge the IPv4 address it maps to.
        address = address.ipv4_mapped
    if any(address.version == network.version and address in network for network in allowed):
        return None
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address in _METADATA_ADDRESSES:
        return "a link-local address (the cloud metadata service)"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_reserved:  # before is_private, which also covers 240.0.0.0/4
        return "a reserved address"
    if address.is_private:
        return "a private address"
    if any(address.version == net.version and address in net for net in EXTRA_BLOCKED_NET_RANGES):
        return "a special-purpose address"
    if not address.is_global:
        return "not a global unicast address"
    return None


def url_parse(url: str) -> tuple[str, str, int, IPAddress | None]:
    """(scheme, ASCII host, port, IP literal or None), or UrlRefused saying what is wrong."""
    if any(ord(char) < 0x21 or ord(char) == 0x7F for char in url):
        raise UrlRefused("The URL contains spaces or control characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UrlRefused("The URL is malformed or its port is invalid.") from None
    if parts.scheme not in ("http", "https"):
        raise UrlRefused("Only http and https URLs are allowed.")
    if "@" in parts.netloc:
        raise UrlRefused("The URL must not contain credentials (user:password@).")
    hostname = parts.hostname
    if not hostname:
        raise UrlRefused("The URL has no host.")
    if port == 0:
        raise UrlRefused("The URL's port is invalid.")
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        literal: IPAddress | None = ipaddress.ip_address(hostname)
    except ValueError:
        literal = None
    if literal is not None:
        return parts.scheme, hostname, port, literal
    try:
        # International names are looked up (and sent in Host) as punycode.
        host = idna.encode(hostname, uts46=True).decode("ascii")
    except idna.IDNAError:
        raise UrlRefused("The URL's host name is not a valid domain name.") from None
    return parts.scheme, host, port, None


def url_check(
    url: str, *, resolver: Resolver | None = None, allowed: Sequence[IPNetwork] | None = None
) -> Target:
    """Parse, resolve once and check every address; the Target to connect to, or UrlRefused."""
    scheme, host, port, literal = url_parse(url)
    allowed = allowed_networks() if allowed is None else allowed
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        try:
            resolved = (resolver or DEFAULT_RESOLVER)(host, port)
            # A scope id (fe80::1%eth0) is not part of the address being judged.
            addresses = [ipaddress.ip_address(str(value).split("%", 1)[0]) for value in resolved]
        except (OSError, UnicodeError, ValueError):
            addresses = []
        if not addresses:
            raise UrlRefused(f"The host {host} does not resolve.")
    for address in addresses:
        reason = address_refusal(address, allowed=allowed)
        if reason:
            where = "is" if literal is not None else f"resolves to {address}, which is"
            raise UrlRefused(
                f"The host {host} {where} {reason}; only public addresses may receive webhooks."
            )
    return Target(url=url, scheme=scheme, host=host, port=port, address=str(addresses[0]))


class _PinnedAddressAdapter(HTTPAdapter):
    """Connects to the checked address instead of resolving the URL's host again."""

    def __init__(self, target: Target) -> None:
        super().__init__(max_retries=0)
        self._target = target

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: bool | str, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        requested = str(host_params["host"]).strip("[]").lower()
        if requested != self._target.host.lower():
            # Only reachable if something re-targeted the request (we follow no redirects).
            raise requests.ConnectionError(f"Refusing to connect to unchecked host {requested}.")
        host_header = f"[{requested}]" if ":" in requested else requested
        if host_params.get("port") is not None:
            host_header += f":{host_params['port']}"
        request.headers["Host"] = host_header
        if self._target.scheme == "https":
            # Verify the certificate against, and send SNI for, the name in the URL.
            pool_kwargs["assert_hostname"] = requested
            pool_kwargs["server_hostname"] = requested
        address = self._target.address
        host_params["host"] = f"[{address}]" if ":" in address else address
        return host_params, pool_kwargs


class _SessionCache(threading.local):
    """Keep-alive connections to receivers, per thread: one session per checked target.

    A session's adapter is pinned to the address checked for it, so a connection is reused
    only for a request whose URL was just checked (every request is) and resolved to that same
    address. A session idle longer than IDLE_SECONDS is closed rather than reused: receivers
    close idle connections after a few seconds (Node after 5), and a request sent on a
    connection the receiver is closing fails without having been delivered.
    """

    IDLE_SECONDS = 4.0
    MAX_TARGETS = 64

    def __init__(self) -> None:
        self._sessions: OrderedDict[tuple[Target, str | None], tuple[requests.Session, float]] = OrderedDict()

    @staticmethod
    def _key(target: Target, ca_bundle: str | None) -> tuple[Target, str | None]:
        return replace(target, url=""), ca_bundle  # the path does not pick the connection

    def get(self, target: Target, ca_bundle: str | None) -> requests.Session:
        entry = self._sessions.pop(self._key(target, ca_bundle), None)
        if entry is not None:
            session, idle_since = entry
            if time.monotonic() - idle_since <= self.IDLE_SECONDS:
                return session
            session.close()
        session = requests.Session()
        # HTTP(S)_PROXY from the environment would send the request somewhere we did not check.
        session.trust_env = False
        adapter = _PinnedAddressAdapter(target)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def done(self, target: Target, ca_bundle: str | None, session: requests.Session, *, keep: bool) -> None:
        """Put the session back after a clean exchange; close it after anything else."""
        if not keep:
            session.close()
            return
        self._sessions[self._key(target, ca_bundle)] = (session, time.monotonic())
        while len(self._sessions) > self.MAX_TARGETS:
            _, (oldest, _) = self._sessions.popitem(last=False)
            oldest.close()


_sessions = _SessionCache()


# What a misbehaving receiver or network can raise below requests. Deliberately not
# `Exception`: a Celery soft time limit must still stop the task.
_NETWORK_ERRORS = (urllib3.exceptions.HTTPError, OSError, ValueError, http.client.HTTPException)


def _network_error(exc: requests.RequestException, timeout_seconds: float) -> str:
    if isinstance(exc, requests.ConnectTimeout):
        return f"Connection timed out after {timeout_seconds:g} s."
    if isinstance(exc, requests.Timeout):
        return f"No response within {timeout_seconds:g} s."
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS error: {exc}"[:500]
    if isinstance(exc, requests.ConnectionError):
        return f"Connection failed: {exc}"[:500]
    return f"{type(exc).__name__}: {exc}"[:500]


def post(
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    timeout_seconds: float,
    resolver: Resolver | None = None,
    allowed: Sequence[IPNetwork] | None = None,
    max_response_bytes: int = RESPONSE_PREFIX_BYTES,
    ca_bundle: str | None = None,
) -> HttpResult:
    """POST `body` to `url` through the guard; an HttpResult whatever happens.

    Certificates are always verified, against the system's CAs or `ca_bundle` (a private CA).
    """
    started = time.monotonic()

    def elapsed_ms() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        target = url_check(url, resolver=resolver, allowed=allowed)
    except UrlRefused as exc:
        return HttpResult(error=f"Refused: {exc.reason}", refused=True, duration_ms=elapsed_ms())
    session = _sessions.get(target, ca_bundle)
    kept = False
    try:
        with session.post(
            url,
            data=body,
            headers={**headers, "Accept-Encoding": "identity"},
            timeout=(timeout_seconds, timeout_seconds),
            allow_redirects=False,
            stream=True,
            verify=ca_bundle or True,
        ) as response:
            # Read only a prefix, and stop at the deadline even if the receiver drips bytes.
            deadline = started + timeout_seconds * 2
            prefix = b""
            while len(prefix) < max_response_bytes and time.monotonic() < deadline:
                try:
                    chunk = response.raw.read(
                        min(1024, max_response_bytes - len(prefix)), decode_content=True
                    )
                except _NETWORK_ERRORS:  # a body cut short still leaves the status answered
                    break
                if not chunk:
                    break
                prefix += chunk
            # An answered exchange keeps its session. A body read to its end has put the
            # connection back in the pool already; closing the response closes any other.
            kept = True
            return HttpResult(
                status_code=response.status_code,
                headers=dict(response.headers),
                body_prefix=prefix,
                duration_ms=elapsed_ms(),
            )
    except requests.RequestException as exc:
        return HttpResult(error=_network_error(exc, timeout_seconds), duration_ms=elapsed_ms())
    except _NETWORK_ERRORS as exc:  # urllib3's own types can escape requests mid-body
        return HttpResult(error=f"{type(exc).__name__}: {exc}"[:500], duration_ms=elapsed_ms())
    finally:
        _sessions.done(target, ca_bundle, session, keep=kept)
