"""The embedded broker's routing tables (`control/<exchange>.exchange`, kombu's filesystem
transport): which queues a message published to an exchange goes to, read at every publish and
changed as each process binds its queues, all of make run's processes at once as they start.

kombu (5.7.0, the newest release) creates a table that does not exist yet with "wb" and only
then locks it: a second process that saw the file exist took the lock first and read it empty
(`JSONDecodeError`, and a worker binding its queues as it starts stopped, and make run with it,
as a publisher reading it did), and the "wb" truncated a table another process held locked and
was writing, which then held that process's write followed by the rest of the other's (lost
bindings, or `Extra data`). treeverse/dvc-task#73 met the same. It also writes a table in place,
so a full disk left it empty or cut short.

Here a table is only ever replaced whole: written under a name readers pass over, then renamed
over the old one, while its writer holds the control folder's lock file, which is created
without truncating and never replaced (so every writer locks the same file). A reader needs no
lock (it reads the old table or the new one), and a write a full disk refused leaves the old
table as it was. A table left empty by an older version (or by kombu's own race) is an empty
table. Nothing is synced to disk: after a crash of the machine a table may come back empty, and
every process binds its queues again as it starts; a process killed between a write and its
rename leaves a `.part` file, which nothing reads (remove it with the broker's folder)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from kombu.exceptions import ChannelError
from kombu.transport.filesystem import LOCK_EX, exchange_queue_t, lock, unlock
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

Table = list[exchange_queue_t]

# In the control folder; ends neither in ".exchange" nor ".part", so nothing takes it for a table.
LOCK_NAME = "tables.lock"


def table_read(file: Path) -> Table:
    """The routing table in `file`: none yet (no file, or one created and not yet written by an
    older version) is an empty one."""
    try:
        content = file.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ChannelError(f"Cannot open {file}: {exc}") from exc
    if not content.strip():
        return []
    try:
        return [exchange_queue_t(*binding) for binding in loads(bytes_to_str(content))]
    # Not UTF-8, not JSON, not a list of bindings.
    except (ValueError, TypeError) as exc:
        raise ChannelError(
            f"Unreadable routing table {file} (delete it and start again): {exc}"
        ) from exc


def table_change(file: Path, change: Callable[[Table], Table]) -> None:
    """Replace the routing table in `file` by `change(table)`, one process at a time; left as
    it is (no file created) when that changes nothing."""
    file.parent.mkdir(exist_ok=True)
    try:
        # "ab": created if missing, never truncated. Let go explicitly, not by the close: a
        # process forked meanwhile (a pool's new child) shares the descriptor, and with it the
        # lock, until it exits, every other writer waiting on it.
        with open(file.parent / LOCK_NAME, "ab") as lock_file:
            lock(lock_file, LOCK_EX)
            try:
                table = table_read(file)
                changed = change(list(table))
                if changed != table:
                    _replace(file, changed)
            finally:
                unlock(lock_file)
    except OSError as exc:
        raise ChannelError(f"Cannot write {file}: {exc}") from exc


def _replace(file: Path, table: Table) -> None:
    partial = file.with_name(f"{file.name}.{uuid.uuid4().hex}.part")
    try:
        with open(partial, "wb") as out:
            out.write(str_to_bytes(dumps(table)))
        os.replace(partial, file)
    except OSError:
        with suppress(OSError):
            os.remove(partial)
        raise
