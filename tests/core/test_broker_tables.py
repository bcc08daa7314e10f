"""core/broker_tables.py: the embedded broker's routing tables, which make run's processes all
write as they start, stay whole and keep every process's queues."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import signal
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import pytest
from kombu import Exchange, Queue
from kombu.exceptions import ChannelError
from kombu.transport.filesystem import exchange_queue_t

from core import broker_tables
from tests.core.test_broker import (
    _embedded_connection,
    _embedded_connection_in,
    files_limited_to,
)

PROCESSES = 8
# Each a fresh table that the processes create at once: with kombu's own transport, some of 300
# rounds always went wrong here (a bind or a publish raising JSONDecodeError, a binding lost).
ROUNDS = 300


def _bind_and_publish(broker_dir: str, index: int, barrier: Any, errors: Any) -> None:
    """In a process of its own, as each of make run's as it starts: bind its queue to each
    round's exchange, all the processes at once, and publish a message to it through that
    exchange."""
    found = []
    with _embedded_connection_in(Path(broker_dir)) as connection:
        channel = connection.channel()
        for round_ in range(ROUNDS):
            exchange = Exchange(f"round{round_}", "direct")
            barrier.wait(timeout=30)
            try:
                Queue(f"q{index}", exchange, routing_key=f"q{index}")(channel).declare()
                connection.Producer(channel).publish(
                    {"round": round_}, exchange=exchange, routing_key=f"q{index}"
                )
            except Exception:  # noqa: BLE001 (any error is the test's failure, reported in full)
                found.append(traceback.format_exc(limit=4))
    errors.put(found)


def test_processes_binding_queues_to_a_new_exchange_at_once_keep_every_binding(
    tmp_path: Path,
) -> None:
    # Given make run's processes, each binding its queue to exchanges no one has bound to yet,
    # all at once
    (tmp_path / "broker" / "queue").mkdir(parents=True)
    (tmp_path / "broker" / "processed").mkdir()
    context = multiprocessing.get_context("fork")
    barrier, errors = context.Barrier(PROCESSES), context.Queue()
    processes = [
        context.Process(
            target=_bind_and_publish,
            args=(str(tmp_path / "broker"), index, barrier, errors),
        )
        for index in range(PROCESSES)
    ]

    # When each binds and then publishes to its queue through the exchange
    for process in processes:
        process.start()
    found = [error for _ in processes for error in errors.get(timeout=120)]
    for process in processes:
        process.join(timeout=30)

    # Then no bind or publish raised, every exchange routes to every process's queue, and every
    # message is in its queue (none dropped for a binding lost)
    assert found == [], f"{len(found)} failed, the first: {found[0]}"
    queues = {f"q{index}" for index in range(PROCESSES)}
    with _embedded_connection_in(tmp_path / "broker") as connection:
        channel = connection.channel()
        for round_ in range(ROUNDS):
            assert {
                binding.queue for binding in channel.get_table(f"round{round_}")
            } == queues, round_
    for queue in queues:
        assert (
            len(list((tmp_path / "broker" / "queue").glob(f"*.{queue}.msg"))) == ROUNDS
        ), queue


def test_a_table_left_empty_is_an_empty_table_and_a_bind_writes_it_whole(
    tmp_path: Path,
) -> None:
    # Given an exchange's table left empty (by a version before this one, which created it and
    # wrote it after)
    control = tmp_path / "broker" / "control"
    control.mkdir(parents=True)
    (control / "left.exchange").write_bytes(b"")
    with _embedded_connection(tmp_path) as connection:
        channel = connection.channel()
        # Then a publish finds no queue there, rather than raising
        assert channel.get_table("left") == []

        # And when a queue is bound to it, the table holds that queue
        Queue("after", Exchange("left", "direct"), routing_key="after")(
            channel
        ).declare()
        assert [binding.queue for binding in channel.get_table("left")] == ["after"]


def test_a_table_the_disk_cannot_take_raises_and_leaves_the_old_table(
    tmp_path: Path,
) -> None:
    # Given an exchange with a queue bound to it
    with _embedded_connection(tmp_path) as connection:
        channel = connection.channel()
        exchange = Exchange("full", "direct")
        Queue("first", exchange, routing_key="first")(channel).declare()
        table = (tmp_path / "broker" / "control" / "full.exchange").read_bytes()

        # When a second queue is bound while the disk has room for part of the longer table
        with files_limited_to(len(table) + 4), pytest.raises(ChannelError):
            Queue("second", exchange, routing_key="second")(channel).declare()

        # Then the table is as it was, whole (kombu wrote what fitted over it, and raised
        # nothing), and no part of the new one is left in the control folder
        assert (tmp_path / "broker" / "control" / "full.exchange").read_bytes() == table
        assert [binding.queue for binding in channel.get_table("full")] == ["first"]
        assert [
            path.name for path in (tmp_path / "broker" / "control").glob("*.part")
        ] == []


def test_a_deleted_queue_leaves_the_exchange_and_the_others_stay(
    tmp_path: Path,
) -> None:
    # Given two queues bound to one exchange
    with _embedded_connection(tmp_path) as connection:
        channel = connection.channel()
        exchange = Exchange("shared", "direct")
        for name in ("kept", "gone"):
            Queue(name, exchange, routing_key=name)(channel).declare()

        # When one is deleted (as Celery deletes a reply queue it is done with)
        channel.queue_delete("gone")

        # Then the exchange routes to the other only
        assert [binding.queue for binding in channel.get_table("shared")] == ["kept"]


def test_an_unreadable_table_is_named_in_the_error(tmp_path: Path) -> None:
    # Given an exchange's table cut short (by a crash of an older version)
    control = tmp_path / "broker" / "control"
    control.mkdir(parents=True)
    (control / "cut.exchange").write_bytes(b'[["cut", "", "cu')
    with (
        _embedded_connection(tmp_path) as connection,
        pytest.raises(ChannelError, match="cut.exchange"),
    ):
        # Then a publish's look at it says which file to delete
        connection.channel().get_table("cut")


def test_a_process_forked_while_a_table_is_written_does_not_keep_the_lock(tmp_path: Path) -> None:
    # Given a thread writing a table, slowly, and a process forked meanwhile (a pool's new child)
    table = tmp_path / "control" / "jobs.exchange"
    writing, forked = threading.Event(), threading.Event()

    def change(bindings: broker_tables.Table) -> broker_tables.Table:
        writing.set()
        assert forked.wait(10)
        return [*bindings, exchange_queue_t("jobs", "", "jobs")]

    writer = threading.Thread(target=broker_tables.table_change, args=(table, change))
    writer.start()
    assert writing.wait(10)
    child = os.fork()
    if child == 0:  # pragma: no cover (the child: lives on while the test looks)
        time.sleep(5)
        os._exit(0)
    try:
        forked.set()
        writer.join(10)

        # Then once the write is done, the lock is free for the next writer (it was held by the
        # child, which shared its descriptor, until it exited)
        with open(table.parent / broker_tables.LOCK_NAME, "ab") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert broker_tables.table_read(table) == [exchange_queue_t("jobs", "", "jobs")]
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
