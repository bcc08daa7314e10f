"""Keep-alive sessions to receivers, each pinned to the address the guard checked for it, whose
connections the request's deadline watches (core/deadlines.py) and read a response past its
interim ones. Used by core/http.py only."""
from __future__ import annotations

import http.client
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from http.cookiejar import DefaultCookiePolicy
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool

from core import deadlines


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (`address`) and what to call it (`host`)."""

    url: str
    scheme: str
    host: str  # ASCII (punycode) host name or the IP literal, without brackets
    port: int
    address: str  # the checked IP address the connection goes to



class _PinnedAddressAdapter(HTTPAdapter):
    """Connects to the checked address instead of resolving the URL's host again."""

    def __init__(self, target: Target) -> None:
        self._target = target
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        # Connections whose sockets the request's deadline watches (core/deadlines.py).
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}

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


class _FinalResponse(http.client.HTTPResponse):
    """A response read past its interim (1xx) ones, as RFC 9110 (15.2) asks of every client:
    http.client skips `100 Continue` only, so a receiver that sent `102 Processing` or
    `103 Early Hints` before its answer had the attempt recorded as a 102 or 103, a failure
    retried, whatever it answered. An endless run of them ends at the request's deadline."""

    def _read_status(self) -> tuple[str, int, str]:
        # http.client's own status-line reader (private, and pinned with Python itself): the
        # only place to read on past an interim response before begin() takes it for the answer.
        while True:
            version, status, reason = super()._read_status()
            if not 102 <= status < 200:  # 100: begin() skips it; 101: a switch, the last answer
                return version, status, reason
            http.client.parse_headers(self.fp)  # the interim response's headers, dropped


class _HTTPConnection(deadlines.WatchedHTTPConnection):
    response_class = _FinalResponse


class _HTTPSConnection(deadlines.WatchedHTTPSConnection):
    response_class = _FinalResponse


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class SessionCache:
    """Keep-alive connections to receivers, shared by a process's threads: idle sessions per
    checked target, each lent to one request at a time. Shared, not per thread, because the
    deliveries worker sends each batch on threads of its own (webhooks/sending.py), which end
    with the batch; a connection outlives them for the next batch to the same receiver.

    A session's adapter is pinned to the address checked for it, so a connection is reused
    only for a request whose URL was just checked (every request is) and resolved to that same
    address. A session idle longer than IDLE_SECONDS is closed rather than reused: receivers
    close idle connections after a few seconds (Node after 5), and a request sent on a
    connection the receiver is closing fails without having been delivered.
    """

    IDLE_SECONDS = 4.0
    # The most idle sessions kept, all targets together (the least recently used go first).
    MAX_IDLE = 64

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Idle sessions, least recently put back first: (target, CA bundle) -> [(session, since)].
        self._idle: OrderedDict[tuple[Target, str | None], list[tuple[requests.Session, float]]] = OrderedDict()
        self._count = 0

    @staticmethod
    def _key(target: Target, ca_bundle: str | None) -> tuple[Target, str | None]:
        return replace(target, url=""), ca_bundle  # the path does not pick the connection

    def get(self, target: Target, ca_bundle: str | None) -> requests.Session:
        """An idle session to `target` (the most recently used), or a new one."""
        stale: list[requests.Session] = []
        found = None
        with self._lock:
            key = self._key(target, ca_bundle)
            idle = self._idle.get(key, [])
            while idle and found is None:
                session, since = idle.pop()
                self._count -= 1
                if time.monotonic() - since <= self.IDLE_SECONDS:
                    found = session
                else:
                    stale.append(session)
            if not idle:
                self._idle.pop(key, None)
        for session in stale:
            session.close()
        return found if found is not None else self._new(target)

    @staticmethod
    def _new(target: Target) -> requests.Session:
        session = requests.Session()
        # HTTP(S)_PROXY from the environment would send the request somewhere we did not check.
        session.trust_env = False
        # No cookies kept: a session serves every client's deliveries to its host, so a cookie one
        # receiver set would go out with another client's delivery to a path of the same host.
        session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        adapter = _PinnedAddressAdapter(target)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def done(self, target: Target, ca_bundle: str | None, session: requests.Session, *, keep: bool) -> None:
        """Put the session back after a clean exchange; close it after anything else."""
        if not keep:
            session.close()
            return
        evicted: list[requests.Session] = []
        with self._lock:
            key = self._key(target, ca_bundle)
            self._idle.setdefault(key, []).append((session, time.monotonic()))
            self._idle.move_to_end(key)
            self._count += 1
            while self._count > self.MAX_IDLE:
                oldest_key, sessions = next(iter(self._idle.items()))
                evicted.append(sessions.pop(0)[0])
                self._count -= 1
                if not sessions:
                    del self._idle[oldest_key]
        for old in evicted:
            old.close()
