"""A TCP proxy in front of the test run's Redis or PostgreSQL, for tests that take the server
away (or slow it, or stall it) without touching the machine's shared one."""
from __future__ import annotations

import contextlib
import socket
import threading
import time


class CountingProxy:
    """A TCP proxy in front of the test run's Redis (or PostgreSQL), counting the connections it is
    asked for. `down`: it closes them at once (Redis gone); `delay`: it waits that long before
    forwarding one (Redis slow to answer); `stalled`: it forwards nothing more on the connections
    it holds, while holding them open (a frozen server, a network that drops packets)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.connections = 0
        self.down = False
        self.delay = 0.0
        self.stalled = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._sockets: list[socket.socket] = []
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client = self._listener.accept()[0]
            except OSError:  # closed: the test is over
                return
            self.connections += 1
            self._sockets.append(client)
            threading.Thread(target=self._forward, args=(client,), daemon=True).start()

    def _forward(self, client: socket.socket) -> None:
        if self.down:
            client.close()
            return
        time.sleep(self.delay)
        try:
            upstream = socket.create_connection(self.upstream)
        except OSError:
            client.close()
            return
        self._sockets.append(upstream)
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        self._pump(client, upstream)

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                while self.stalled:
                    time.sleep(0.01)
                target.sendall(data)
        except OSError:
            pass
        for end in (source, target):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """The server gone: the connections it holds end, and new ones are closed at once (until
        `down` is set back to False)."""
        self.down = True
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.stalled = False
        self._listener.close()
        for sock in self._sockets:
            # Shut down first: a socket closed while a pump waits on it stays open till it returns.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
