"""A webhook receiver that answers at once: 204 in one TCP segment, TCP_NODELAY, keep-alive.

Run as `python -m bench.receiver PORT`; it prints one line per request on stdout,
`<CLOCK_MONOTONIC seconds> <wall-clock seconds> <path> <body bytes>`, which the harness reads
to time deliveries (CLOCK_MONOTONIC is system-wide on Linux, so the harness can compare it with
its own clock; the wall clock lines it up with the timestamps the service writes).
"""
from __future__ import annotations

import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RESPONSE = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
_out_lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Sets TCP_NODELAY on the accepted socket: no Nagle/delayed-ACK stall on small answers.
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        arrived, arrived_wall = time.monotonic(), time.time()
        # Status line, headers and (empty) body in one write: one segment.
        self.wfile.write(RESPONSE)
        self.wfile.flush()
        with _out_lock:
            sys.stdout.write(f"{arrived:.6f} {arrived_wall:.6f} {self.path} {len(body)}\n")
            sys.stdout.flush()

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request on stdout is the log


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        super().server_bind()


def main() -> None:
    server = Server(("127.0.0.1", int(sys.argv[1])), Handler)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
