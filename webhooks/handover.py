"""Handing a batch's outcomes over as its lanes (webhooks/sending.py) come by them, on the batch's
own thread: each at most RECORD_WITHIN_SECONDS after it came, with those that came meanwhile, so
that a quick batch is recorded in a transaction or two and a lane that hangs holds up none of
the others' outcomes."""
from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

# How long an attempt's outcome waits for others of its batch, to be recorded with them (s): a
# quick batch takes a transaction or two, and a lane that hangs holds up none of the others'.
RECORD_WITHIN_SECONDS = 0.2

Group = TypeVar("Group", bound=Hashable)


@dataclass(frozen=True)
class _LaneEnded(Generic[Group]):
    group: Group


class HandOver(Generic[Group]):
    """What a batch's lanes do, told from their threads (`sent`, `lane_ended`) and handed over on
    the batch's own (`run`). A lane belongs to a group (the claims one client sends to one host):
    what a group's lanes left is known once they have all ended."""

    def __init__(self, lanes: Iterable[Group]) -> None:
        self._lanes_left = Counter(lanes)  # each group's lanes still running
        self._happened: queue.SimpleQueue[int | _LaneEnded[Group]] = queue.SimpleQueue()
        # Set when handing over raised: the lanes take no more.
        self.stopped = threading.Event()

    def sent(self, index: int) -> None:
        """A lane has the result of the batch's claim `index`."""
        self._happened.put(index)

    def lane_ended(self, group: Group) -> None:
        """A lane of `group` ended (having sent all it could, or not, or raised)."""
        self._happened.put(_LaneEnded(group))

    def run(self, *, left_by: Callable[[Group], list[int]], finished: Callable[[list[int]], None]) -> None:
        """Until every lane has ended, hand `finished` the claims sent, and those `left_by` says a
        group's lanes left once they have all ended, each at most RECORD_WITHIN_SECONDS after it
        came, with what came meanwhile. Should that raise, the lanes are stopped and it raises."""
        try:
            self._run(left_by, finished)
        except BaseException:
            self.stopped.set()
            raise

    def _run(self, left_by: Callable[[Group], list[int]], finished: Callable[[list[int]], None]) -> None:
        due: list[int] = []
        due_by = 0.0  # when what is due is handed over, whatever comes meanwhile
        while self._lanes_left.total():
            wait_seconds = max(0.0, due_by - time.monotonic()) if due else None
            try:
                what = self._happened.get(timeout=wait_seconds)
            except queue.Empty:  # the time is up for what is due
                what = None
            came: list[int] = []
            if isinstance(what, _LaneEnded):
                self._lanes_left[what.group] -= 1
                if not self._lanes_left[what.group]:
                    came = left_by(what.group)
            elif what is not None:
                came = [what]
            if came and not due:
                due_by = time.monotonic() + RECORD_WITHIN_SECONDS
            due += came
            if due and (time.monotonic() >= due_by or not self._lanes_left.total()):
                finished(due)
                due = []
