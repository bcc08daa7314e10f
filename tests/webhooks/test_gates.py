"""This process's gates to a share: a lane waits for a place only behind quick attempts, and
only beside a lane of its batch or as its client's one waiting lane."""
from __future__ import annotations

import threading
import time

from tests.webhooks.conftest import until
from webhooks import gates


def test_a_lane_waits_at_its_process_gate_only_behind_quick_attempts() -> None:
    # Given a process's gate to a share with one place, held by a lane sending quick attempts
    # (a new one every 0.1 s) for longer than a slow attempt takes, then leaving
    gate = gates.Gate(1)
    held = gate.enter(time.monotonic() + 5, client="client:a", batch=None)
    assert held is not None

    def quick_attempts() -> None:
        for _ in range(8):
            time.sleep(0.1)
            held.attempt_since = time.monotonic()
        gate.leave(held)

    threading.Thread(target=quick_attempts).start()

    # When another lane comes to the gate, it waits for the place and takes it
    started = time.monotonic()
    second = gate.enter(time.monotonic() + 5, client="client:a", batch=None)
    assert second is not None
    assert gates.SLOW_ATTEMPT_SECONDS < time.monotonic() - started < 2

    # And behind a holder whose attempt is slow, a lane waits only until the attempt is
    started = time.monotonic()
    assert gate.enter(time.monotonic() + 5, client="client:a", batch=None) is None
    assert time.monotonic() - started <= gates.SLOW_ATTEMPT_SECONDS + 0.1


def test_one_lane_of_a_client_waits_for_a_place_the_others_are_put_back_at_once() -> None:
    # Given a gate whose one place is held by a lane sending quick attempts until told to stop,
    # and a lane of its client, in another batch, waiting for the place
    gate = gates.Gate(1)
    held = gate.enter(time.monotonic() + 5, client="client:a", batch=None)
    assert held is not None
    stop = threading.Event()

    def quick_attempts() -> None:
        while not stop.wait(0.05):
            held.attempt_since = time.monotonic()
        gate.leave(held)

    entered: dict[str, gates.Place | None] = {}

    def enter(name: str, client: str) -> None:
        entered[name] = place = gate.enter(time.monotonic() + 10, client=client, batch=object())
        if place is not None:
            gate.leave(place)  # at once: the next lane waiting has it

    holder = threading.Thread(target=quick_attempts)
    holder.start()
    waiter = threading.Thread(target=enter, args=("waiter", "client:a"))
    waiter.start()
    until(lambda: "client:a" in gates.waiting._clients, what="the client's lane waiting")

    # When another of the client's batches comes to the gate, and one of another client's
    enter("second", "client:a")
    other = threading.Thread(target=enter, args=("other", "client:b"))
    other.start()
    until(lambda: "client:b" in gates.waiting._clients, what="the other client's lane waiting")
    stop.set()
    for thread in (holder, waiter, other):
        thread.join()

    # Then the client's second batch was turned away while its first waited (it holds no
    # thread for its wait), and the first and the other client's waiting lane each had the
    # place in turn
    assert entered["second"] is None
    assert entered["waiter"] is not None and entered["other"] is not None
