"""A Redis that answers a slot's request later than the client waits (1 s, core/cache_redis.py):
the script ran on Redis and took the slot, the client gave up on its answer. The run goes ahead
as with Redis down, and the slot it may hold is its own to let go: before, it kept the key's next
runs out for its whole lease (a rule's 20 s or 2 minutes, a prune's)."""
from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import redis
from django.conf import settings

from core import housekeeping
from core.slots import Slots

# Later than the client's socket timeout (1 s).
LATE_SECONDS = 1.3


class LateProxy:
    """A TCP proxy to Redis that holds back its answer to the next EVALSHA (the slot's script)
    by LATE_SECONDS, once; the request itself reaches Redis at once."""

    def __init__(self, host: str, port: int) -> None:
        self._to = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.late_next = threading.Event()
        self.answered_late = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._listener.accept()
                server = socket.create_connection(self._to)
                late = threading.Event()
                threading.Thread(target=self._requests, args=(client, server, late), daemon=True).start()
                threading.Thread(target=self._answers, args=(server, client, late), daemon=True).start()

    def _requests(self, client: socket.socket, server: socket.socket, late: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if b"EVALSHA" in data.upper() and self.late_next.is_set():
                    self.late_next.clear()
                    late.set()
                server.sendall(data)
        server.close()

    def _answers(self, server: socket.socket, client: socket.socket, late: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                if late.is_set():
                    late.clear()
                    time.sleep(LATE_SECONDS)
                    self.answered_late.set()
                client.sendall(data)
        client.close()

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def proxy() -> Iterator[LateProxy]:
    url = urlsplit(settings.CACHE_URL)
    late = LateProxy(url.hostname or "127.0.0.1", url.port or 6379)
    yield late
    late.close()


def test_a_run_whose_slot_was_answered_late_goes_ahead_and_the_next_run_is_alone(
    proxy: LateProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the housekeeping slots through the service's client (its 1 s socket timeout, no
    # retry after a timeout), and a Redis whose answer to the next slot taken comes 1.3 s late
    url = urlsplit(settings.CACHE_URL)._replace(netloc=f"127.0.0.1:{proxy.port}").geturl()
    through = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    slots = Slots(lambda: through, prefix=f"test-slots-stall-{uuid.uuid4().hex[:8]}:")
    monkeypatch.setattr(housekeeping, "slots", slots)
    assert slots.held("jobs.fail_abandoned") == 0  # connected; the proxy's next EVALSHA is late
    proxy.late_next.set()

    # When a run takes its slot then (the client gives up on the answer), and ends
    with housekeeping.run_alone("jobs.fail_abandoned", lease=housekeeping.rows_lease_seconds(3000)) as stalled:
        assert proxy.answered_late.wait(5)

    # Then it went ahead, as without Redis, no slot is left held, and the next run is alone
    # (before, the slot the script took on Redis kept the rule out for its 2 minutes)
    assert stalled
    assert slots.held("jobs.fail_abandoned") == 0
    with housekeeping.run_alone("jobs.fail_abandoned", lease=housekeeping.rows_lease_seconds(3000)) as alone:
        assert alone


def test_a_run_admitted_with_redis_refusing_sends_nothing_more_as_it_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the housekeeping slots through a client of a Redis that refuses connections (down)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    down = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1)
    released: list[str] = []
    monkeypatch.setattr(down, "zrem", lambda key, *holders: released.append(key))
    monkeypatch.setattr(housekeeping, "slots", Slots(lambda: down, prefix="test-slots-down:"))

    # When a run takes its slot and ends
    with housekeeping.run_alone("jobs.fail_abandoned", lease=housekeeping.rows_lease_seconds(10)) as alone:
        pass

    # Then it went ahead, and its end sent no release (its refused request could not have run:
    # before, one more request to a Redis down, as many as runs and deliveries)
    assert alone
    assert released == []
