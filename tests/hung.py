"""A server that takes connections and never answers, as a hung Redis or broker does (paused,
or behind a partition): each client waits out its own timeout. It keeps the connections made to
it, for a test to count."""
from __future__ import annotations

import socket
import threading


class HungServer:
    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self.server.getsockname()[1]
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return  # closed
            self.connections.append(connection)

    def close(self) -> None:
        self.server.close()
        for connection in self.connections:
            connection.close()
