"""core/broker.py: kombu's Redis transport with one client object per connection pool, and the
embedded broker's filesystem transport, whose wait ends when its worker stops and whose messages
survive a full disk."""
from __future__ import annotations

import logging
import multiprocessing
import os
import resource
import signal
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from queue import Empty
from typing import Any

import pytest
from celery.signals import worker_shutting_down
from django.conf import settings
from kombu import Connection
from kombu.exceptions import ChannelError

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


def _embedded_connection(tmp_path: Path) -> Connection:
    """A connection through the embedded broker's transport, its folders as make run's
    (core/settings/workers.py) under `tmp_path/broker`."""
    broker_dir = tmp_path / "broker"
    for name in ("queue", "processed"):
        (broker_dir / name).mkdir(parents=True)
    return _embedded_connection_in(broker_dir)


def _embedded_connection_in(broker_dir: Path) -> Connection:
    return Connection("filesystem://", transport="core.broker:FilesystemTransport", transport_options={
        "data_folder_in": str(broker_dir / "queue"), "data_folder_out": str(broker_dir / "queue"),
        "processed_folder": str(broker_dir / "processed"), "store_processed": False,
        "control_folder": str(broker_dir / "control"), "polling_interval": 0.1,
    })


@contextmanager
def files_limited_to(size: int) -> Iterator[None]:
    """This process's writes stop at `size` bytes into a file (RLIMIT_FSIZE, EFBIG beyond it),
    as a disk filling under a write stops it: partway, or at its first byte."""
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    signal_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an error, not the process's end
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, limits[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, signal_handler)


@pytest.mark.parametrize("room", [0, 4096], ids=["no room", "room for part of it"])
def test_a_message_the_disk_cannot_take_whole_raises_and_leaves_no_file(tmp_path: Path, room: int) -> None:
    # Given a consumer's queue on the embedded broker
    with _embedded_connection(tmp_path) as connection:
        # (A name of its own: kombu keeps the queues it declared in the process, not the folder.)
        queue = connection.SimpleQueue(f"full-{uuid.uuid4().hex}")
        try:
            # When a message (16 KB) is published while the disk has room for `room` bytes of it
            with files_limited_to(room), pytest.raises(ChannelError):
                queue.put({"text": "x" * 16384})

            # Then nothing is left in the queue's folder, and the consumer finds no message, no
            # part of one to die on
            assert sorted(path.name for path in (tmp_path / "broker" / "queue").iterdir()) == []
            with pytest.raises(Empty):
                queue.get(block=False)

            # And once there is room, the next publish arrives whole
            queue.put({"text": "after"})
            message = queue.get(block=False)
            assert message.payload == {"text": "after"}
            message.ack()
        finally:
            queue.close()


def test_an_unreadable_message_file_is_set_aside_with_a_warning_and_the_next_delivered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a queue whose folder holds, before a good message, the files an older version left
    # on a full disk (one empty, one cut short), one that is not UTF-8 and one that is JSON but
    # not a message
    with _embedded_connection(tmp_path) as connection:
        queue = connection.SimpleQueue("leftovers")
        try:
            folder = tmp_path / "broker" / "queue"
            # (Named to come first: a consumer takes files in the order of their names, which
            # kombu begins with the system's monotonic clock in ms, never with a 0.)
            leftovers = {"0_0-empty.leftovers.msg": b"", "0_1-cut.leftovers.msg": b'{"body": "eyJ',
                         "0_2-latin.leftovers.msg": b"\xff\xfe", "0_3-other.leftovers.msg": b'{"body": "e30="}'}
            for name, content in leftovers.items():
                (folder / name).write_bytes(content)
            queue.put({"n": 1})

            # When a consumer takes the next message
            with caplog.at_level(logging.WARNING, logger="core.broker"):
                message = queue.get(block=False)

            # Then it is the good one, and each unreadable file is in broken/ beside the queue's
            # folder, untouched, named in one WARNING line of its own
            assert message.payload == {"n": 1}
            message.ack()
            broken = tmp_path / "broker" / "broken"
            assert {path.name: path.read_bytes() for path in broken.iterdir()} == leftovers
            warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
            assert len(warnings) == 4, warnings
            for name, line in zip(leftovers, warnings, strict=True):
                assert line.startswith(f"Unreadable broker message {name} set aside as {broken / name}: "), line
            assert list(folder.iterdir()) == []
        finally:
            queue.close()


def test_messages_are_taken_in_the_order_they_were_sent_when_the_clock_gains_a_digit(tmp_path: Path) -> None:
    # Given two messages of a queue, sent as the monotonic clock (in ms, which names them) went
    # from six digits to seven
    with _embedded_connection(tmp_path) as connection:
        queue = connection.SimpleQueue("digits")
        try:
            folder = tmp_path / "broker" / "queue"
            for n, stamp in (("older", "999999"), ("newer", "1000000")):
                queue.put({"n": n})
                [sent] = [path for path in folder.iterdir() if not path.name.startswith(("999999_", "1000000_"))]
                sent.rename(folder / f"{stamp}_{sent.name.partition('_')[2]}")

            # When a consumer takes them, then the older comes first
            taken = []
            for _ in range(2):
                message = queue.get(block=False)
                taken.append(message.payload["n"])
                message.ack()
            assert taken == ["older", "newer"]
        finally:
            queue.close()


def _take_and_die(broker_dir: str, queue_name: str) -> None:
    """In a process of its own: take the queue's next message and die before acknowledging it,
    as a worker honcho kills mid-job."""
    connection = _embedded_connection_in(Path(broker_dir))
    message = connection.SimpleQueue(queue_name).get(block=False)
    assert message.payload == {"job": "running"}
    os._exit(0)  # no acknowledgement, no hand-back at close: a SIGKILL's end


def test_a_message_a_killed_consumer_took_is_requeued_at_the_next_start_and_an_acknowledged_one_is_not(
    tmp_path: Path,
) -> None:
    # Given a queue on the embedded broker with two messages: one a consumer takes and
    # acknowledges, one another consumer takes and is killed before it acknowledges it
    with _embedded_connection(tmp_path) as connection:
        queue = connection.SimpleQueue("killed")
        try:
            queue.put({"job": "done"})
            done = queue.get(block=False)
            done.ack()
            queue.put({"job": "running"})
            taker = multiprocessing.get_context("fork").Process(
                target=_take_and_die, args=(str(tmp_path / "broker"), "killed")
            )
            taker.start()
            taker.join(timeout=30)
            assert taker.exitcode == 0
            with pytest.raises(Empty):
                queue.get(block=False)

            # When make run starts again (its workers not started yet)
            requeued = broker.requeue_unacknowledged(
                queue_folder=str(tmp_path / "broker" / "queue"), processed_folder=str(tmp_path / "broker" / "processed")
            )

            # Then the killed consumer's message is in its queue again, once, and the acknowledged
            # one is not (it was lost: the job stayed STARTED until the sweeper failed it hours later)
            assert requeued == 1
            again = queue.get(block=False)
            assert again.payload == {"job": "running"}
            again.ack()
            with pytest.raises(Empty):
                queue.get(block=False)
            assert list((tmp_path / "broker" / "processed").iterdir()) == []
        finally:
            queue.close()


def test_a_message_handed_back_as_its_consumer_closes_is_in_its_queue_once(tmp_path: Path) -> None:
    # Given a message a consumer took and did not acknowledge
    with _embedded_connection(tmp_path) as connection:
        queue = connection.SimpleQueue("closing")
        queue.put({"n": 1})
        queue.get(block=False)

        # When the consumer closes (a worker's warm stop hands its unacknowledged messages back)
        queue.close()

    # Then the message is in its queue once, and nothing is left to requeue at the next start
    assert broker.requeue_unacknowledged(
        queue_folder=str(tmp_path / "broker" / "queue"), processed_folder=str(tmp_path / "broker" / "processed")
    ) == 0
    assert len(list((tmp_path / "broker" / "queue").glob("*.closing.msg"))) == 1
