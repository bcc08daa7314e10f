"""Leased slots in Redis: a limit per key across holders, a dead holder's slot freed by its
lease, and admission when Redis cannot be reached."""
from __future__ import annotations

import time
import uuid

import redis
from django.conf import settings

from core.slots import Slots
from tests.conftest import free_port


def slots() -> Slots:
    client = redis.Redis.from_url(settings.CACHE_URL)
    return Slots(lambda: client, prefix=f"test-slots-{uuid.uuid4().hex[:8]}:")


def test_at_most_limit_holders_at_once_and_a_release_frees_one() -> None:
    shared = slots()
    first, second = (shared.acquire("h", limit=2, lease_seconds=30) for _ in range(2))

    assert first is not None and first.held and second is not None and second.held
    assert shared.acquire("h", limit=2, lease_seconds=30) is None
    assert shared.acquire("other", limit=2, lease_seconds=30) is not None  # keys are apart
    assert shared.held("h") == 2

    first.release()
    third = shared.acquire("h", limit=2, lease_seconds=30)
    assert third is not None and third.held


def test_a_waiting_holder_gets_the_slot_freed_while_it_waits() -> None:
    shared = slots()
    held = shared.acquire("h", limit=1, lease_seconds=30)
    assert held is not None

    started = time.monotonic()
    assert shared.acquire("h", limit=1, lease_seconds=30, wait_seconds=0.1) is None
    assert 0.08 <= time.monotonic() - started < 0.5


def test_a_slot_whose_holder_died_frees_itself_when_its_lease_ends() -> None:
    shared = slots()
    assert shared.acquire("h", limit=1, lease_seconds=0.2) is not None  # never released

    assert shared.acquire("h", limit=1, lease_seconds=0.2) is None
    time.sleep(0.3)
    assert shared.acquire("h", limit=1, lease_seconds=0.2) is not None


def test_without_redis_every_holder_is_admitted() -> None:
    unreachable = redis.Redis(port=free_port(), socket_connect_timeout=0.2, socket_timeout=0.2)
    down = Slots(lambda: unreachable)

    taken = [down.acquire("h", limit=1, lease_seconds=30) for _ in range(3)]

    assert all(slot is not None and not slot.held for slot in taken)
    for slot in taken:
        slot.release()  # a no-op, never an error


def test_a_holder_gives_up_at_once_behind_slow_holders() -> None:
    shared = slots()
    assert shared.acquire("h", limit=1, lease_seconds=30) is not None
    time.sleep(0.3)  # the holder has held it a while: a slow attempt

    started = time.monotonic()
    assert shared.acquire("h", limit=1, lease_seconds=30, wait_seconds=5, wait_while_held_under_seconds=0.2) is None
    assert time.monotonic() - started < 0.2


def test_a_refreshed_slot_outlives_its_first_lease_and_its_holder_is_judged_young_again() -> None:
    shared = slots()
    held = shared.acquire("h", limit=1, lease_seconds=0.4)
    assert held is not None
    time.sleep(0.3)

    held.refresh()
    time.sleep(0.2)  # past the first lease, inside the refreshed one

    assert shared.acquire("h", limit=1, lease_seconds=0.4) is None
    started = time.monotonic()  # held for 0.2 s since the refresh: those behind wait for it
    assert shared.acquire("h", limit=1, lease_seconds=0.4, wait_seconds=0.05, wait_while_held_under_seconds=0.3) is None
    assert time.monotonic() - started >= 0.04


def test_turns_are_taken_one_per_interval_waiting_for_the_last_to_run_out() -> None:
    shared = slots()
    assert shared.turn("e", every_seconds=0.3, wait_seconds=0)
    assert not shared.turn("e", every_seconds=0.3, wait_seconds=0.1)  # it would not come in time
    assert shared.turn("other", every_seconds=0.3, wait_seconds=0)  # keys are apart

    started = time.monotonic()
    assert shared.turn("e", every_seconds=0.3, wait_seconds=5)
    assert 0.2 <= time.monotonic() - started < 2  # when the first turn ran out (0.3 s after it)


def test_without_redis_every_turn_is_taken() -> None:
    unreachable = redis.Redis(port=free_port(), socket_connect_timeout=0.2, socket_timeout=0.2)
    down = Slots(lambda: unreachable)

    assert all(down.turn("e", every_seconds=30, wait_seconds=0) for _ in range(3))
