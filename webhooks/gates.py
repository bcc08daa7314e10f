"""This process's gates to a client's shares of the receivers (webhooks/sending.py): a lane's
place at one, and which lanes may wait there for a place: those of a batch another of whose
lanes is through the gate, and one other lane of each client at a time."""
from __future__ import annotations

import threading
import time
import weakref

from core.slots import Slot

# How long an attempt runs before it counts as slow (s): lanes wait for a place only behind
# quicker ones (a fast receiver frees a place in milliseconds).
SLOW_ATTEMPT_SECONDS = 0.5


class Place:
    """A lane's place at a gate and its slot of the share, and when the attempt it is sending
    began."""

    def __init__(self, batch: object = None) -> None:
        self.attempt_since = self._slot_refreshed = time.monotonic()
        self.slot: Slot | None = None
        self.batch = batch

    def attempt_begins(self, now: float) -> None:
        """An attempt starts: this process's gate sees it (and, at most every half of
        SLOW_ATTEMPT_SECONDS, so do the other processes' lanes through the slot), so that a
        lane sending one quick attempt after another is judged by its current attempt, not by
        how long it has held its place, and its slot's lease outlasts the lane."""
        self.attempt_since = now
        if self.slot is not None and now - self._slot_refreshed >= SLOW_ATTEMPT_SECONDS / 2:
            self.slot.refresh()
            self._slot_refreshed = now


class Waiting:
    """The clients one of whose lanes is waiting for a place in this process, on a batch's
    thread that sends nothing else: one lane each.

    A holder sending one quick attempt after another keeps its place for as long as a lane
    takes deliveries (WEBHOOK_TIMEOUT_SECONDS), so a lane waiting behind it usually gives up
    after its whole wait. Were every lane let wait, a client whose receiver answers just under
    SLOW_ATTEMPT_SECONDS, with more webhooks than its share sends, kept a worker's thread
    waiting for each batch holding only those, beyond its share, and the other clients'
    webhooks queued behind those batches (a healthy client's 3 s late at the median, 15 s at
    worst, and growing: tests/faults/test_hostile_receiver.py). One lane waiting is enough to
    take the next place that frees; the others are put back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: set[str] = set()

    def begin(self, client: str) -> bool:
        """Take `client`'s turn to wait; False while another of its lanes has it."""
        with self._lock:
            if client in self._clients:
                return False
            self._clients.add(client)
            return True

    def end(self, client: str) -> None:
        with self._lock:
            self._clients.discard(client)


waiting = Waiting()


class Gate:
    """This process's lanes through one share: `limit` at once. A lane waits for a place only
    while every holder's attempt under way began less than SLOW_ATTEMPT_SECONDS ago (a fast
    receiver frees a place in milliseconds): behind a lane stuck on a slow receiver it gives up
    at once, so that it holds no thread. And only while a lane of its batch holds a place here
    (its batch's thread is taken anyway), or as its client's waiting lane (Waiting). (The shared
    slots judge by when each was taken or last refreshed: by the attempt under way, within half
    of SLOW_ATTEMPT_SECONDS.)"""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._held: list[Place] = []
        self._changed = threading.Condition()

    def enter(self, give_up_at: float, *, client: str, batch: object) -> Place | None:
        waits = False  # the client's turn to wait is this lane's
        try:
            with self._changed:
                while len(self._held) >= self._limit:
                    now = time.monotonic()
                    quick_until = min(place.attempt_since for place in self._held) + SLOW_ATTEMPT_SECONDS
                    if now >= min(give_up_at, quick_until):
                        return None
                    if not (waits or any(place.batch is batch for place in self._held)):
                        waits = waiting.begin(client)
                        if not waits:
                            return None
                    self._changed.wait(min(give_up_at, quick_until) - now)
                place = Place(batch)
                self._held.append(place)
                return place
        finally:
            if waits:
                waiting.end(client)

    def leave(self, place: Place) -> None:
        with self._changed:
            self._held.remove(place)
            self._changed.notify()


_gates: weakref.WeakValueDictionary[tuple[str, int], Gate] = weakref.WeakValueDictionary()
_gates_lock = threading.Lock()


def gate(key: str, limit: int) -> Gate:
    """This process's gate to a share. Kept while a lane holds it, so the gates of shares no
    longer sent to go by themselves."""
    with _gates_lock:
        found = _gates.get((key, limit))
        if found is None:
            found = _gates[(key, limit)] = Gate(limit)
        return found
