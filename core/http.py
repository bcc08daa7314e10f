"""The one outbound HTTP client: timeouts, no redirects, and the private-network guard.

Every request to a URL someone else chose (webhook callbacks) goes through `post`, which:
1. checks the URL's form (http/https, no credentials, no control characters, a valid port);
2. resolves the host once (through an injectable resolver) and checks *every* address: only
   global unicast addresses pass, unless one falls in `WEBHOOK_ALLOWED_NETWORKS`;
3. connects to the address it checked (so DNS cannot change between the check and the
   connection), with the URL's host in the `Host` header and as the TLS SNI/certificate name,
   and keeps it alive for the next request checked to that same address (core/http_sessions.py);
4. never follows a redirect, never uses environment proxies, and keeps no cookies;
5. bounds the whole exchange by the wall clock: name resolution, connect, TLS handshake, status
   line, headers and the body prefix end within `timeout_seconds` plus `deadlines.SLACK_SECONDS`
   however slowly the receiver sends (core/deadlines.py), and reads the body's raw bytes (never
   decompressed, whatever `Content-Encoding` says);
6. returns an `HttpResult` (status, first bytes of the body, duration or the network error)
   instead of raising for HTTP or network failures.

Why not `requests-hardened` itself (it is in requirements for its blocked-range list): its
filter has a loopback switch but no CIDR allow-list, calls `socket.getaddrinfo` directly (no
injectable resolver for tests), and checks only the first address the resolver returns. The
pinning technique of core/http_sessions.py (rewrite the pool's host, keep `Host`,
`assert_hostname` and `server_hostname`) is the one its `IPFilterAdapter` uses.
"""
from __future__ import annotations

import http.client
import ipaddress
import socket
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import idna
import requests
import urllib3
from django.conf import settings
from requests_hardened.ip_filter import EXTRA_BLOCKED_NET_RANGES

from core import deadlines
from core.http_sessions import SessionCache, Target

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


@dataclass
class HttpResult:
    """What one request did: a status (any, 3xx included) or a network error, never both."""

    status_code: int | None = None
    # As received: names case-insensitive (a receiver may send `retry-after`).
    headers: Mapping[str, str] = field(default_factory=dict)
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
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        # fec0::/10: deprecated (RFC 3879), yet still routed inside some networks; Python counts
        # it as global.
        return "a site-local address"
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


def _name_refusal(host: str) -> str:
    """One sentence for a name that does not resolve and one that resolves to a non-public
    address: told apart (or told what kind of address it was), any client could map the names
    of the service's own network (`postgres`, `redis.internal`) through the answers."""
    return (
        f"The host {host} must resolve to public addresses only; it does not resolve, or resolves "
        "to an address that is not public."
    )


def url_check(
    url: str, *, resolver: Resolver | None = None, allowed: Sequence[IPNetwork] | None = None,
    resolve_seconds: float | None = None, resolve_for: Hashable = None,
) -> Target:
    """Parse, resolve once and check every address; the Target to connect to, or UrlRefused.
    With `resolve_seconds`, a resolver that has not answered by then raises TimeoutError; the
    lookup waits behind those of `resolve_for` (a client) only (core/deadlines.py)."""
    scheme, host, port, literal = url_parse(url)
    allowed = allowed_networks() if allowed is None else allowed
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        try:
            resolve = resolver or DEFAULT_RESOLVER
            if resolve_seconds is None:
                resolved = resolve(host, port)
            else:
                resolved = deadlines.resolve_within(resolve, host, port, seconds=resolve_seconds, key=resolve_for)
            # A scope id (fe80::1%eth0) is not part of the address being judged.
            addresses = [ipaddress.ip_address(str(value).split("%", 1)[0]) for value in resolved]
        except TimeoutError:
            raise
        except (OSError, UnicodeError, ValueError):
            addresses = []
        if not addresses:
            raise UrlRefused(_name_refusal(host))
    for address in addresses:
        reason = address_refusal(address, allowed=allowed)
        if reason and literal is None:
            raise UrlRefused(_name_refusal(host))
        if reason:
            raise UrlRefused(f"The host {host} is {reason}; only public addresses may receive webhooks.")
    return Target(url=url, scheme=scheme, host=host, port=port, address=str(addresses[0]))


_sessions = SessionCache()


# What a misbehaving receiver or network can raise below requests (RecursionError: a header
# folded or nested beyond reason). Deliberately not `Exception`: a Celery soft time limit must
# still stop the task where the pool has one.
_NETWORK_ERRORS = (urllib3.exceptions.HTTPError, OSError, ValueError, http.client.HTTPException, RecursionError)


def _reason(exc: BaseException) -> object:
    """What went wrong, without the request's URL: urllib3's MaxRetryError (inside requests'
    ConnectionError and SSLError) quotes the URL's path and query, where receivers often keep a
    secret (a chat webhook's /services/T0/B0/<token>, ?key=…). It would reach the attempt log,
    the endpoint's last error and the INFO log line, and a long one pushed the cause itself
    past their length limits."""
    reason: object = exc.args[0] if isinstance(exc, requests.RequestException) and exc.args else exc
    if isinstance(reason, urllib3.exceptions.MaxRetryError) and reason.reason is not None:
        reason = reason.reason
        # "<connection repr>: Failed to establish a new connection: <OSError>": the OSError says it.
        if isinstance(reason, urllib3.exceptions.NewConnectionError) and reason.__cause__ is not None:
            reason = reason.__cause__
    return reason


def _network_error(exc: BaseException, timeout_seconds: float) -> str:
    if isinstance(exc, requests.ConnectTimeout):
        error = f"Connection timed out after {timeout_seconds:g} s."
    elif isinstance(exc, requests.Timeout):
        error = f"No response within {timeout_seconds:g} s."
    elif isinstance(exc, requests.exceptions.SSLError):
        error = f"TLS error: {_reason(exc)}"
    elif isinstance(exc, requests.ConnectionError):
        error = f"Connection failed: {_reason(exc)}"
    else:
        error = f"{type(exc).__name__}: {exc}"
    # Messages can quote what the receiver sent; PostgreSQL text cannot hold NUL.
    return error[:500].replace("\x00", "\ufffd")


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
    resolve_for: Hashable = None,
) -> HttpResult:
    """POST `body` to `url` through the guard; an HttpResult whatever happens, within
    `timeout_seconds` (+ deadlines.SLACK_SECONDS) from the call, DNS included.

    Certificates are always verified, against the system's CAs or `ca_bundle` (a private CA).
    `resolve_for`: whom the request is for (a client's id), so that its host name's lookup
    waits behind that client's own lookups only, never behind another's hung name server.
    A response whose status arrived is an answer even if its body is cut short (by the deadline,
    a reset, bad chunking): the status is what the attempt records.
    """
    started = time.monotonic()

    def elapsed_ms() -> int:
        return int((time.monotonic() - started) * 1000)

    expired = f"No response within {timeout_seconds:g} s (the attempt's limit, however slow the answer)."
    with deadlines.deadline_for(timeout_seconds) as deadline:
        try:
            target = url_check(url, resolver=resolver, allowed=allowed, resolve_seconds=deadline.remaining(),
                               resolve_for=resolve_for)
        except UrlRefused as exc:
            return HttpResult(error=f"Refused: {exc.reason}", refused=True, duration_ms=elapsed_ms())
        except TimeoutError:
            return HttpResult(error=f"No address for the host within {timeout_seconds:g} s (DNS).",
                              duration_ms=elapsed_ms())
        session = _sessions.get(target, ca_bundle)
        kept = False
        try:
            remaining = max(deadline.remaining(), 0.001)
            with session.post(
                url,
                data=body,
                headers={**headers, "Accept-Encoding": "identity"},
                timeout=(remaining, remaining),
                allow_redirects=False,
                stream=True,
                verify=ca_bundle or True,
            ) as response:
                # Only a prefix, as sent: a compressed body stays compressed (no bomb to inflate).
                prefix = b""
                while len(prefix) < max_response_bytes and not deadline.expired:
                    try:
                        chunk = response.raw.read(min(1024, max_response_bytes - len(prefix)), decode_content=False)
                    except _NETWORK_ERRORS:  # a body cut short still leaves the status answered
                        break
                    if not chunk:
                        break
                    prefix += chunk
                # An answered exchange keeps its session. A body read to its end has put the
                # connection back in the pool already; closing the response closes any other.
                kept = not deadline.expired
                return HttpResult(
                    status_code=response.status_code,
                    headers=response.headers,
                    body_prefix=prefix,
                    duration_ms=elapsed_ms(),
                )
        except (requests.RequestException, *_NETWORK_ERRORS) as exc:  # urllib3's own types can escape mid-body
            error = expired if deadline.expired else _network_error(exc, timeout_seconds)
            return HttpResult(error=error, duration_ms=elapsed_ms())
        finally:
            _sessions.done(target, ca_bundle, session, keep=kept)
