"""A webhook receiver that misbehaves on purpose, one way per path: what a broken integration or an
attacker could send back. Raw sockets, so it can send what no HTTP library would.

    with HostileReceiver() as hostile:
        http.post(hostile.url("drip"), ...)

Modes (the path's first segment; `MODES` lists them):
- `ok`: a plain 200, the polite baseline;
- `drip`: status line and headers, then the body one byte a second, for ever;
- `drip-headers`: the status line and headers one byte every half second;
- `drip-tls`: any https request: the start of a TLS handshake record, then a byte a second;
- `hang`: reads the request, never answers;
- `reset`: reads the request, then resets the connection (RST);
- `close`: reads the request, then closes without a byte;
- `garbage-status`: a status line that is not HTTP;
- `status-999`, `status-0`: a three-digit status no one uses, and one out of range;
- `huge-headers`: a 1 MiB header line; `many-headers`: 10,000 headers;
- `non-ascii-headers`: header names and values in Latin-1 and UTF-8 bytes, NUL included;
- `repeated-headers`: Retry-After (and others) sent several times;
- `conflicting-length`: two different Content-Length headers;
- `retry-after-<form>`: a 503 with a Retry-After of a given form (see RETRY_AFTER);
- `redirect`: a 307 to an internal address;
- `huge-body`: a 200 with a 50 MiB body; `gzip-bomb`: a 200 of gzip that inflates to 1 GiB;
- `bad-chunked`: chunked encoding with an invalid chunk size;
- `endless-continue`: `100 Continue` answers, one after another, for ever;
- `interim`: `102 Processing` and `103 Early Hints` (with a header), then its answer, a 500;
- `binary-body`: a 500 whose body is NUL bytes and invalid UTF-8;
- `malformed-header`: a 500 with a header line without a colon, and one that starts with white space.
"""
from __future__ import annotations

import gzip
import select
import socket
import socketserver
import struct
import threading
import time

RETRY_AFTER = {
    "seconds": b"5",
    "date": b"Wed, 21 Oct 2037 07:28:00 GMT",
    "past-date": b"Wed, 21 Oct 2015 07:28:00 GMT",
    "negative": b"-10",
    "huge": b"9" * 400,
    "garbage": b"soon, maybe",
    "non-ascii": "\u0663\u0660".encode(),
    "float": b"1.5",
    "empty": b"",
    "year-zero": b"Mon, 01 Jan 0000 00:00:00 GMT",
}

MODES = (
    "ok", "drip", "drip-headers", "drip-tls", "hang", "reset", "close", "garbage-status", "status-999", "status-0",
    "huge-headers", "many-headers", "non-ascii-headers", "repeated-headers", "conflicting-length", "redirect", "huge-body",
    "gzip-bomb", "bad-chunked", "endless-continue", "binary-body", "interim", "malformed-header",
    *(f"retry-after-{form}" for form in RETRY_AFTER),
)

_BOMB: bytes | None = None


def _bomb() -> bytes:
    """gzip of 1 GiB of zeros (about 1 MiB), made once."""
    global _BOMB
    if _BOMB is None:
        block = b"\0" * (1 << 20)
        compressor = gzip.compress(block * 16, compresslevel=9)
        _BOMB = compressor * 64  # concatenated members: a valid stream of 1 GiB
    return _BOMB


def _client_gone(sock: socket.socket) -> bool:
    """Whether the client has closed (or reset) its end of `sock`, as the system knows now."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and not sock.recv(1, socket.MSG_PEEK)
    except (OSError, ValueError):  # ValueError: closed by its mode meanwhile (`reset`, `close`)
        return True


class _Handler(socketserver.BaseRequestHandler):
    # Every answer says `Connection: close` (and closes): the client never reuses a connection
    # this server is closing, so each test sees the mode it asked for.
    server: _Server

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if sock.recv(1, socket.MSG_PEEK) == b"\x16":  # a TLS ClientHello: the path is encrypted
            self.server.seen.append("drip-tls")
            try:
                self.mode_drip_tls(sock, "drip-tls")
            except OSError:
                pass
            return
        path = self._read_request(sock)
        if path is None:
            return
        mode = path.partition("?")[0].strip("/").split("/", 1)[0]
        self.server.seen.append(mode)
        with self.server.lock:
            # At most: the requests whose clients are still there, this one included. A handler
            # notices its client gone only when its thread next runs (and a request accepted
            # late may be read after its client gave up); counted by `in_flight` alone, a sender
            # that closed one connection and opened the next, its limit kept, could be seen
            # holding one more than it does on a loaded host.
            self.server.answering.add(sock)
            self.server.in_flight += 1
            waiting = sum(not _client_gone(each) for each in self.server.answering)
            self.server.max_in_flight = max(self.server.max_in_flight, waiting)
        try:
            getattr(self, "mode_" + mode.replace("-", "_"), self.mode_retry_after)(sock, mode)
        except OSError:
            pass  # the client gave up (its deadline): what the mode is for
        finally:
            with self.server.lock:
                self.server.in_flight -= 1
                self.server.answering.discard(sock)

    def _read_request(self, sock: socket.socket) -> str | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return lines[0].split(" ")[1]

    def _stop(self, seconds: float) -> bool:
        """Wait; True when the mode should end: the client has gone (closed or shut down its end:
        noticed at once, so `in_flight` counts only requests the client is still waiting on),
        or the server is shutting down."""
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0:
            readable, _, _ = select.select([self.request], [], [], left)
            if not readable:
                break
            try:
                if not self.request.recv(65536):  # what the client sends meanwhile is read and dropped
                    return True
            except OSError:
                return True
        return self.server.stopping.is_set()

    def mode_ok(self, sock: socket.socket, mode: str) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")

    def mode_drip(self, sock: socket.socket, mode: str) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 100000\r\n\r\n")
        while not self._stop(1.0):
            sock.sendall(b"x")

    def mode_drip_headers(self, sock: socket.socket, mode: str) -> None:
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 10000:
            sock.sendall(bytes([byte]))
            if self._stop(0.5):
                return

    def mode_drip_tls(self, sock: socket.socket, mode: str) -> None:
        sock.sendall(b"\x16\x03\x03\x40\x00\x02")  # a handshake record of 16 KiB: a ServerHello
        while not self._stop(1.0):
            sock.sendall(b"\x00")

    def mode_hang(self, sock: socket.socket, mode: str) -> None:
        while not self._stop(0.5):
            pass

    def mode_reset(self, sock: socket.socket, mode: str) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    def mode_close(self, sock: socket.socket, mode: str) -> None:
        sock.close()

    def mode_garbage_status(self, sock: socket.socket, mode: str) -> None:
        sock.sendall(b"\x00\xffNOT HTTP AT ALL \xe2\x98\x83\r\n\r\n")

    def mode_status_999(self, sock: socket.socket, mode: str) -> None:
        sock.sendall(b"HTTP/1.1 999 Whatever\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")

    def mode_status_0(self, sock: socket.socket, mode: str) -> None:
        sock.sendall(b"HTTP/1.1 0 Zero\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")

    def mode_huge_headers(self, sock: socket.socket, mode: str) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\nX-Huge: " + b"h" * (1 << 20) + b"\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")

    def mode_many_headers(self, sock: socket.socket, mode: str) -> None:
        headers = b"".join(b"X-H%d: v\r\n" % i for i in range(10000))
        sock.sendall(b"HTTP/1.1 200 OK\r\n" + headers + b"Connection: close\r\nContent-Length: 0\r\n\r\n")

    def mode_malformed_header(self, sock: socket.socket, mode: str) -> None:
        sock.sendall(
            b"HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\n"
            b"No colon here\x1b[2K\r\n"
            b" folded: onto nothing\r\n"
            b"Content-Length: 2\r\n\r\nok"
        )

    def mode_non_ascii_headers(self, sock: socket.socket, mode: str) -> None:
        sock.sendall(
            b"HTTP/1.1 503 \xc3\xa9chec\r\nConnection: close\r\n"
            b"Retry-After: \xd9\xa3\r\n"
            b"X-\xe9t\xe9: caf\xe9 \xe2\x98\x83 \x00 end\r\n"
            b"\xff\xfe: raw\r\n"
            b"Content-Length: 4\r\n\r\nnope"
        )

    def mode_repeated_headers(self, sock: socket.socket, mode: str) -> None:
        sock.sendall(
            b"HTTP/1.1 429 Too Many\r\nRetry-After: 5\r\nRetry-After: 3600\r\nRetry-After: soon\r\n"
            b"Connection: close\r\nContent-Length: 2\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nxx"
        )

    def mode_conflicting_length(self, sock: socket.socket, mode: str) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\nConnection: close\r\nContent-Length: 2\r\n\r\nxx")

    def mode_retry_after(self, sock: socket.socket, mode: str) -> None:
        form = mode.removeprefix("retry-after-")
        value = RETRY_AFTER.get(form, b"1")
        sock.sendall(b"HTTP/1.1 503 Busy\r\nRetry-After: " + value + b"\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbusy")

    def mode_redirect(self, sock: socket.socket, mode: str) -> None:
        sock.sendall(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://169.254.169.254/latest/meta-data/\r\n"
                     b"Connection: close\r\nContent-Length: 0\r\n\r\n")

    def mode_huge_body(self, sock: socket.socket, mode: str) -> None:
        size = 50 << 20
        sock.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % size)
        block = b"b" * 65536
        for _ in range(size // len(block)):
            sock.sendall(block)

    def mode_gzip_bomb(self, sock: socket.socket, mode: str) -> None:
        body = _bomb()
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body))
        sock.sendall(body)

    def mode_bad_chunked(self, sock: socket.socket, mode: str) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZZ\r\n\r\n")

    def mode_endless_continue(self, sock: socket.socket, mode: str) -> None:
        while not self.server.stopping.is_set():
            sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n" * 100)
            time.sleep(0.01)

    def mode_interim(self, sock: socket.socket, mode: str) -> None:
        sock.sendall(b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
                     b"HTTP/1.1 500 Oops\r\nConnection: close\r\nContent-Length: 4\r\n\r\noops")

    def mode_binary_body(self, sock: socket.socket, mode: str) -> None:
        body = b"\x00\x00\xff\xfe\xc3\x28 oops \x00"
        sock.sendall(b"HTTP/1.1 500 Oops\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.stopping = threading.Event()
        self.seen: list[str] = []
        # Requests being answered now, the most at once whose clients were still there (the
        # senders' per-host limit), and the sockets answered now.
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.answering: set[socket.socket] = set()


class HostileReceiver:
    """Serves every mode on one loopback port until stopped."""

    def __init__(self) -> None:
        self._server = _Server()
        self.port = int(self._server.server_address[1])

    @property
    def seen(self) -> list[str]:
        return self._server.seen

    @property
    def in_flight(self) -> int:
        return self._server.in_flight

    @property
    def max_in_flight(self) -> int:
        return self._server.max_in_flight

    def url(self, mode: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/{mode}"

    def start(self) -> HostileReceiver:
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HostileReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
