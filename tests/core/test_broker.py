"""core/broker.py: kombu's Redis transport with one client object per connection pool, and the
embedded broker's filesystem transport, whose wait ends when its worker stops."""
from __future__ import annotations

import threading
import uuid
from pathlib import Path
from queue import Empty
from typing import Any

import pytest
from celery.signals import worker_shutting_down
from django.conf import settings
from kombu import Connection

import core.celery  # noqa: F401 (connects the worker's signal receivers)
from core import broker


def test_messages_go_through_one_client_and_survive_a_dropped_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a connection through the transport, counting the client objects its channel builds
    # for commands (the consumer's own, asynchronous one is kombu's, made once)
    built: list[Any] = []
    create_client = broker.Channel._create_client

    def counting(self: broker.Channel, asynchronous: bool = False) -> Any:
        client = create_client(self, asynchronous=asynchronous)
        if not asynchronous:
            built.append(client)
        return client

    monkeypatch.setattr(broker.Channel, "_create_client", counting)
    queue_name = f"broker-test-{uuid.uuid4().hex}"
    with Connection(settings.CELERY_BROKER_URL, transport=settings.CELERY_BROKER_TRANSPORT) as connection:
        queue = connection.SimpleQueue(queue_name)
        try:
            # When messages are published, and again after kombu dropped the channel's pool
            for n in range(3):
                queue.put({"n": n})
            publishing_clients = len(built)
            queue.channel._disconnect_pools()
            queue.put({"n": 3})

            # Then every message arrives, in order
            received = []
            for _ in range(4):
                message = queue.get(timeout=5)
                received.append(message.payload["n"])
                message.ack()
            assert received == [0, 1, 2, 3]
        finally:
            queue.clear()
            queue.close()

    # And the three publishes (and the queue's declaration) used one client, the new pool another
    assert settings.CELERY_BROKER_TRANSPORT == "core.broker:Transport"
    assert publishing_clients == 1
    assert len(built) == 2 and built[1].connection_pool is not built[0].connection_pool


def test_redis_replies_are_parsed_by_hiredis() -> None:
    # requirements/base.txt installs it; redis-py then parses every reply in C (broker, rate
    # limits, cache): 10-15% less CPU a command than its own Python parser.
    from redis._parsers import _HiredisParser
    from redis.connection import Connection

    assert isinstance(Connection()._parser, _HiredisParser)


def test_the_embedded_brokers_wait_for_a_message_ends_when_the_worker_stops(tmp_path: Path) -> None:
    # Given a consumer on the embedded broker's transport, waiting up to 10 minutes for a message
    folders = {name: str(tmp_path / name) for name in ("queue", "processed", "control")}
    for folder in folders.values():
        Path(folder).mkdir()
    options = {"data_folder_in": folders["queue"], "data_folder_out": folders["queue"],
               "processed_folder": folders["processed"], "control_folder": folders["control"],
               "polling_interval": 0.1}
    ended: list[str] = []

    def wait_for_a_message() -> None:
        with Connection("filesystem://", transport="core.broker:FilesystemTransport",
                        transport_options=options) as connection:
            queue = connection.SimpleQueue("idle")
            try:
                queue.get(block=True, timeout=600)
            except Empty:
                ended.append("no message")
            finally:
                queue.close()

    waiting = threading.Thread(target=wait_for_a_message, daemon=True)
    waiting.start()
    try:
        # When the worker of this process begins to stop (Ctrl-C, SIGTERM)
        worker_shutting_down.send(sender="test", sig="SIGTERM", how="Warm", exitcode=0)

        # Then the wait ends with no message, long before its timeout (it went on for 600 s)
        waiting.join(timeout=60)
        assert not waiting.is_alive()
        assert ended == ["no message"]
    finally:
        broker.FilesystemTransport.stopping = False
