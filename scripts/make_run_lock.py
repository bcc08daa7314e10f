"""make run's lock on DATA_DIR (scripts/run-dev): taken on the descriptor given, or, held, the
processes holding it named on standard output.

The lock is held by every process of the make run that took it (scripts/honcho_start.py
--hold-fd), and after a kill -9 of its honcho by the processes still stopping, a worker finishing
its job: no make run is left to stop then, and "stop it first" alone left the user looking for
one. Named are the holders whose parent holds none (honcho, or each process a killed honcho left),
on Linux; elsewhere none are.

Usage: make_run_lock.py FD (exit 0: taken; 1: held by another)
"""
from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

# The most of a process's command line shown: the program and its first arguments name it.
COMMAND_SHOWN_CHARACTERS = 100


def _holders(fd: int) -> dict[int, int]:
    """Each process (pid) with the open file of `fd` on a descriptor, and its parent's pid."""
    lock = os.stat(fd)
    holders = {}
    for process in Path("/proc").glob("[0-9]*"):
        try:
            descriptors = list((process / "fd").iterdir())
            if any(_same_file(descriptor, lock) for descriptor in descriptors):
                # The parent's pid: the field after the command's closing parenthesis and state.
                stat = (process / "stat").read_text()
                holders[int(process.name)] = int(stat.rpartition(")")[2].split()[1])
        except OSError:  # gone, or another user's
            continue
    return holders


def _same_file(descriptor: Path, lock: os.stat_result) -> bool:
    try:
        target = descriptor.stat()
    except OSError:
        return False
    return (target.st_dev, target.st_ino) == (lock.st_dev, lock.st_ino)


def _command(pid: int) -> str:
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    except OSError:
        return "?"
    return b" ".join(arguments).decode(errors="replace")[:COMMAND_SHOWN_CHARACTERS]


def main() -> int:
    fd = int(sys.argv[1])
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holders = _holders(fd)
        # This process and the make run that started it (scripts/run-dev) hold the file too.
        ours = os.getpid()
        while ours in holders:
            ours = holders.pop(ours)
        roots = sorted(pid for pid, parent in holders.items() if parent not in holders)
        print(", ".join(f"pid {pid} {_command(pid)}" for pid in roots))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
