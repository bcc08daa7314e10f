"""kombu's transports as the service uses them: Redis publishing through one client object per
connection pool, and the filesystem (make run's embedded broker) letting its worker stop at once,
surviving a full disk and keeping a message a killed worker took.

kombu's Redis channel builds a new `redis.Redis` object for every message it publishes (and for
every other command it sends outside the consumer's loop). Building one takes about 0.2 ms of
CPU here, its table of response callbacks, a sixth of a Celery publish (docs/benchmarks.md).
The object is a thin handle on the channel's connection pool, so one per pool serves every
publish; the pool, its connections and everything else stay kombu's.
"""
from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from queue import Empty
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem, redis, virtual
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

from core.broker_tables import table_change, table_read
from core.log_database_errors import first_line

logger = logging.getLogger(__name__)


class Channel(redis.Channel):
    _client_for_pool: tuple[Any, Any] | None = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        pool = self.pool  # a new one after kombu dropped the old (a reconnect): a new client
        if self._client_for_pool is None or self._client_for_pool[0] is not pool:
            self._client_for_pool = (pool, self._create_client())
        yield self._client_for_pool[1]


class Transport(redis.Transport):
    Channel = Channel


class FilesystemQoS(virtual.QoS):
    """kombu's bookkeeping of a channel's unacknowledged messages, which also removes a message's
    file once it is acknowledged or rejected (FilesystemChannel)."""

    def ack(self, delivery_tag: str) -> None:
        super().ack(delivery_tag)
        self.channel.forget(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        super().reject(delivery_tag, requeue=requeue)
        self.channel.forget(delivery_tag)


class FilesystemChannel(filesystem.Channel):
    """kombu's filesystem channel, whose messages survive a full disk and a killed worker.

    kombu writes a message's file in place, under the name consumers look for: a write that met
    a full disk (ENOSPC) left an empty or partial file, and the consumer that took it (removing
    it) raised JSONDecodeError and its worker exited: one worker for each publish that failed
    (beat's, every few seconds while the disk was full). Here a message is
    written under a name consumers pass over (`.part` after kombu's) and renamed into place once
    whole, or removed; and a consumer sets aside a file it cannot read (an older version's
    leftover, a crash's) in `broken/` beside the queue's folder, with one WARNING line, and goes
    on.

    kombu removed a message's file as its consumer took it, and kept the message in memory until
    it was acknowledged: a worker killed meanwhile (honcho kills one still running a job 5 s after
    Ctrl-C) lost it, and its job stayed STARTED, holding its client's one running place, until the
    sweeper failed it hours later (`worker_lost`). Here the file stays in `processed/` until the
    message is acknowledged, rejected or handed back; `make run` puts what is left there back in
    its queue before its workers start (`requeue_unacknowledged`), as Redis hands a killed
    worker's message to the next after the visibility timeout.

    Its routing tables (which queues an exchange's messages go to) are replaced whole, one writer
    at a time, where kombu's were written in place by processes binding at once
    (core/broker_tables.py).

    Names, order and every other operation stay kombu's (kombu 5.x's `_put` and `_get`, the two a
    virtual transport's channel implements, `_restore`, which hands a message back, and the
    routing table's `get_table`, `_queue_bind` and `_delete`)."""

    QoS = FilesystemQoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Delivery tag -> the file of a message taken and not yet acknowledged.
        self._taken: dict[str, str] = {}
        # Queues consumed without acknowledgements (Celery's control replies): done with once taken.
        self._no_ack_queues: set[str] = set()

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        if no_ack:
            self._no_ack_queues.add(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        message = super().basic_get(queue, no_ack=no_ack, **kwargs)
        if no_ack and message is not None:
            self.forget(message.delivery_tag)
        return message

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        path = os.path.join(self.data_folder_out, name)
        partial = f"{path}.part"
        try:
            # Buffered, unlike kombu's: an unbuffered write may write part of the message and
            # return, where this one writes it all or raises.
            with open(partial, "wb") as file:
                file.write(str_to_bytes(dumps(payload)))
            os.replace(partial, path)
        except OSError as exc:
            with suppress(OSError):
                os.remove(partial)
            raise ChannelError(f"Cannot add file {path!r} to directory: {exc}") from exc

    def _get(self, queue: str) -> Any:
        wanted = f"{queue}.msg"
        for name in sorted(os.listdir(self.data_folder_in), key=_arrival):
            if name.partition(".")[2] != wanted:
                continue
            # Taken by a rename within DATA_DIR (kombu moves it to the system's temporary folder,
            # a copy when that is another filesystem): one consumer wins, and no byte is copied.
            taken = os.path.join(self.processed_folder, name)
            try:
                os.rename(os.path.join(self.data_folder_in, name), taken)
            except OSError:
                continue  # another consumer took it
            try:
                with open(taken, "rb") as file:
                    payload = loads(bytes_to_str(file.read()))
            except OSError as exc:
                raise ChannelError(f"Cannot read file {taken!r} from queue.") from exc
            except ValueError as exc:  # not JSON (empty, cut short), or not UTF-8
                self._set_aside(taken, exc)
                continue
            if not _is_message(payload):
                self._set_aside(taken, ValueError("JSON, but not a message (no properties.delivery_tag)"))
                continue
            if self.store_processed:
                pass  # kept for good, as kombu keeps them
            elif queue in self._no_ack_queues:
                os.remove(taken)
            else:
                self._taken[payload["properties"]["delivery_tag"]] = taken
            return payload
        raise Empty()

    def _restore(self, message: Any) -> None:
        super()._restore(message)  # a copy, in its queue again
        self.forget(message.delivery_tag)

    def get_table(self, exchange: str) -> list[Any]:
        return table_read(self._exchange_file(exchange))

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        binding = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        table_change(self._exchange_file(exchange),
                     lambda table: table if binding in table else [binding, *table])

    def _delete(self, queue: str, exchange: str, routing_key: str, pattern: str, *args: Any, **kwargs: Any) -> None:
        self._purge(queue)  # what virtual.Channel._delete does, and kombu's calls first
        binding = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        table_change(self._exchange_file(exchange), lambda table: [each for each in table if each != binding])

    def forget(self, delivery_tag: str) -> None:
        """Remove the file of a message that is done with (acknowledged, rejected, handed back)."""
        path = self._taken.pop(delivery_tag, None)
        if path is not None:
            # One left (a disk gone read-only) is put back at the next start: delivered twice,
            # which a job's conditional transitions and a delivery's row make harmless.
            with suppress(OSError):
                os.remove(path)

    def _set_aside(self, path: str, error: BaseException) -> None:
        """Move an unreadable message file to `broken/` beside the queue's folder, for an operator
        to look at: deleted, a message would be lost without a trace."""
        broken = os.path.join(os.path.dirname(os.path.abspath(self.data_folder_in)), "broken")
        destination = os.path.join(broken, os.path.basename(path))
        try:
            os.makedirs(broken, exist_ok=True)
            os.rename(path, destination)
        except OSError as exc:  # left where it was taken to, out of the queue all the same
            destination = f"{path} (not moved: {exc})"
        logger.warning("Unreadable broker message %s set aside as %s: %s", os.path.basename(path), destination,
                       first_line(error))


def requeue_unacknowledged(*, queue_folder: str, processed_folder: str) -> int:
    """Put every message taken and never acknowledged (its worker killed) back in its queue, in
    its place (its name is its time of sending); how many. Only while no worker runs: a running
    one's messages are there too."""
    names = [name for name in os.listdir(processed_folder) if name.endswith(".msg")]
    for name in names:
        os.rename(os.path.join(processed_folder, name), os.path.join(queue_folder, name))
    return len(names)


def _arrival(name: str) -> tuple[int, str]:
    """A message file's place in its queue. Each is named by the monotonic clock in ms, then a
    uuid: compared as text (kombu's order), `1000000_…` came before `999999_…`, and a queue's
    oldest messages waited behind every one sent after the clock gained a digit."""
    return len(name.partition("_")[0]), name


def _is_message(payload: Any) -> bool:
    """Whether `payload` has what kombu reads of every message it takes (virtual.Message): read
    without it, it raised KeyError in the worker, which exited as it did on a file cut short."""
    properties = payload.get("properties") if isinstance(payload, dict) else None
    return isinstance(properties, dict) and "delivery_tag" in properties


class FilesystemTransport(filesystem.Transport):
    """kombu's filesystem transport on the channel above, whose wait for a message ends at its
    next poll once the worker of this process is stopping.

    A worker on a transport with no event loop (this one) runs Celery's synchronous loop, which
    looks whether it should stop only between two waits of 2 s (`drain_events(timeout=2.0)`),
    and waits once more after it saw the stop: an idle worker took 2-4 s to begin its warm
    shutdown, of the 5 s honcho (make run) gives it before it kills. Here a wait is a series of
    polls, each a polling interval long, that ends when `stopping` is set (core/celery.py, as the
    worker's stop begins)."""

    Channel = FilesystemChannel

    # Set from the worker's signal handler, in the main thread between two of its steps: a flag
    # read once a poll, no lock (the handler could run while that thread holds one).
    stopping = False

    def drain_events(self, connection: Any, timeout: float | None = None) -> None:
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            poll = self.polling_interval
            if deadline is not None:
                poll = min(poll, max(deadline - monotonic(), 0.0))
            try:
                return super().drain_events(connection, timeout=poll)
            except TimeoutError:  # kombu raises socket.timeout, an alias
                if FilesystemTransport.stopping or (deadline is not None and monotonic() >= deadline):
                    raise
