"""Fault 9: a receiver that drips its answer holds 20 deliveries; a healthy receiver's deliveries
keep their normal latency, and the dripping host never has more than its share in flight. And a
hostile client whose receivers drip on many hosts, its own and the healthy client's, costs the
healthy client's deliveries nothing: each client's share is its own. And a thousand deliveries
waiting for a dripping host cost the deliveries worker and the database little while they wait
(parked until a place frees), so the healthy client's deliveries keep their latency. And so do
they while a client whose receiver answers just under a slow attempt asks for more webhooks than
its share sends."""
from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.hostile_receiver import HostileReceiver
from tests.faults.stack import HANG_PATH, Api, Stack, WebhookReceiver, wait_for
from webhooks.dispatch import BATCH_MAX_DELIVERIES

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

HANGING = 20
PROBES = 16
# Probes spread over a few attempt limits (3 s in the fault stack), so that the dripping
# deliveries time out, are retried and are put back while the healthy ones are measured.
PAUSE_SECONDS = 0.4
MAX_IN_FLIGHT_PER_HOST = 4


@pytest.fixture
def hostile() -> Iterator[HostileReceiver]:
    with HostileReceiver() as receiver:
        yield receiver


def delivery_latencies(api: Api, receiver: WebhookReceiver, count: int, *, pause: float = 0.0) -> list[float]:
    """Jobs one after another (`pause` seconds apart), each with a callback to `receiver`:
    seconds from each job's finish (its row's finished_at) to the receiver having its webhook."""
    latencies = []
    for index in range(count):
        time.sleep(pause)
        job = api.submit("api.tasks.hello_world", {"message": f"probe {index}"}, callback_url=receiver.url)
        (received,) = wait_for(lambda job_id=job["id"]: receiver.for_job(job_id), timeout=30, interval=0.005,
                               what="the probe's webhook")
        received_wall = time.time() - (time.monotonic() - received.at)
        finished = datetime.fromisoformat(api.job(job["id"])["finished_at"].replace("Z", "+00:00"))
        latencies.append(received_wall - finished.timestamp())
    return latencies


def test_a_dripping_receiver_slows_only_its_own_deliveries(
    make_stack: Callable[..., Stack], receiver: WebhookReceiver, hostile: HostileReceiver, figures: dict[str, Any]
) -> None:
    # Given the service (a deliveries worker of 16 threads, as compose runs it), a healthy
    # receiver and its deliveries' latency when nothing else is happening
    stack = make_stack(env={"WEBHOOK_MAX_IN_FLIGHT_PER_HOST": str(MAX_IN_FLIGHT_PER_HOST)})
    stack.start_service(jobs=2, deliveries=16)
    api = stack.client()
    delivery_latencies(api, receiver, 3)  # warm: connections, caches
    quiet = delivery_latencies(api, receiver, PROBES, pause=PAUSE_SECONDS)

    # When 20 deliveries go to a receiver that sends its headers a byte every half second (each
    # attempt hangs until its limit, then is retried)
    hanging = [api.submit("api.tasks.hello_world", {"message": f"drip {i}"},
                          callback_url=hostile.url("drip-headers"))["id"] for i in range(HANGING)]
    wait_for(lambda: hostile.in_flight >= MAX_IN_FLIGHT_PER_HOST, timeout=30, interval=0.05,
             what="the dripping receiver's slots all taken")
    under_drip = delivery_latencies(api, receiver, PROBES, pause=PAUSE_SECONDS)
    still_hanging = hostile.in_flight

    # Then the healthy receiver's deliveries kept their normal latency (p50 within 2x)...
    quiet_p50, drip_p50 = statistics.median(quiet), statistics.median(under_drip)
    figures.update(
        quiet_p50_ms=round(quiet_p50 * 1000, 1), drip_p50_ms=round(drip_p50 * 1000, 1),
        quiet_max_ms=round(max(quiet) * 1000, 1), drip_max_ms=round(max(under_drip) * 1000, 1),
        ratio=round(drip_p50 / quiet_p50, 2), dripping_requests=len(hostile.seen),
        dripping_max_in_flight=hostile.max_in_flight, hanging_deliveries=HANGING,
    )
    assert still_hanging >= 1, "the dripping receiver was not holding attempts while the probes ran"
    assert len(hostile.seen) > 2 * MAX_IN_FLIGHT_PER_HOST, "the dripping deliveries were not retried meanwhile"
    assert drip_p50 <= 2 * quiet_p50, figures
    # ...and the dripping host never had more than its share of attempts at once
    assert hostile.max_in_flight <= MAX_IN_FLIGHT_PER_HOST, figures
    # And every attempt to it ended at the limit as a timeout, recorded
    attempts = [a for job_id in hanging[:5] for d in api.deliveries(job_id) for a in d["attempts"]]
    finished = [a for a in attempts if a["duration_ms"] is not None]
    assert finished and all(a["status_code"] is None and "within 3 s" in a["error"] for a in finished), attempts
    figures["longest_dripping_attempt_ms"] = max(a["duration_ms"] for a in finished)
    assert figures["longest_dripping_attempt_ms"] <= 3000 + 1000


# The hostile client's receivers: more hosts than the deliveries worker has threads to hang on.
HOSTILE_HOSTS = 12
HOSTILE_JOBS_PER_HOST = 4
MAX_IN_FLIGHT_PER_CLIENT = 8


def test_a_client_dripping_on_many_hosts_slows_only_its_own_deliveries(
    make_stack: Callable[..., Stack], receiver: WebhookReceiver, figures: dict[str, Any]
) -> None:
    # Given the service (a deliveries worker of 16 threads), a healthy client and its
    # deliveries' latency when nothing else is happening
    stack = make_stack(env={"WEBHOOK_MAX_IN_FLIGHT_PER_HOST": str(MAX_IN_FLIGHT_PER_HOST),
                            "WEBHOOK_MAX_IN_FLIGHT_PER_CLIENT": str(MAX_IN_FLIGHT_PER_CLIENT)})
    stack.start_service(jobs=2, deliveries=16)
    healthy, hostile_client = stack.client(), stack.client()
    delivery_latencies(healthy, receiver, 3)
    quiet = delivery_latencies(healthy, receiver, PROBES, pause=PAUSE_SECONDS)

    with ExitStack() as hosts:
        drippers = [hosts.enter_context(HostileReceiver()) for _ in range(HOSTILE_HOSTS)]
        # When another client's webhooks go to receivers that never answer in time: twelve
        # hosts of its own that drip their headers (4 x 12 attempts could hang at once, more
        # than the worker's threads), and a path on the healthy client's own receiver host
        for index in range(HOSTILE_JOBS_PER_HOST):
            for dripper in drippers:
                hostile_client.submit("api.tasks.hello_world", {"message": f"drip {index}"},
                                      callback_url=dripper.url("drip-headers"))
            hostile_client.submit("api.tasks.hello_world", {"message": f"hang {index}"},
                                  callback_url=receiver.url + HANG_PATH)
        wait_for(lambda: sum(d.in_flight for d in drippers) + receiver.hanging >= MAX_IN_FLIGHT_PER_CLIENT - 1,
                 timeout=30, interval=0.05, what="the hostile client's attempts hanging")
        in_flight: list[int] = []
        probing = threading.Event()

        def sample() -> None:
            while not probing.wait(0.02):
                in_flight.append(sum(d.in_flight for d in drippers))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        under_attack = delivery_latencies(healthy, receiver, PROBES, pause=PAUSE_SECONDS)
        probing.set()
        sampler.join()
        hanging_at_most = max(d.max_in_flight for d in drippers)
        hanging_total_at_end = sum(d.in_flight for d in drippers) + receiver.hanging

    # Then the healthy client's deliveries kept their normal latency (p50 within 2x)...
    quiet_p50, attack_p50 = statistics.median(quiet), statistics.median(under_attack)
    figures.update(
        quiet_p50_ms=round(quiet_p50 * 1000, 1), attack_p50_ms=round(attack_p50 * 1000, 1),
        quiet_max_ms=round(max(quiet) * 1000, 1), attack_max_ms=round(max(under_attack) * 1000, 1),
        ratio=round(attack_p50 / quiet_p50, 2), hostile_hosts=HOSTILE_HOSTS,
        hanging_total_at_end=hanging_total_at_end, hanging_one_host_at_most=hanging_at_most,
        hanging_on_its_hosts_at_most=max(in_flight),
    )
    assert hanging_total_at_end >= 1, "the hostile client's attempts were not hanging while the probes ran"
    assert attack_p50 <= 2 * quiet_p50, figures
    # ...and the hostile client never had more than its share in flight, on any one host and
    # on all of them
    assert hanging_at_most <= MAX_IN_FLIGHT_PER_HOST, figures
    assert max(in_flight) <= MAX_IN_FLIGHT_PER_CLIENT, figures


BACKLOG = 1000
BACKLOG_WATCH_SECONDS = 10


def test_a_thousand_deliveries_waiting_on_a_dripping_host_cost_little_while_they_wait(
    make_stack: Callable[..., Stack], receiver: WebhookReceiver, hostile: HostileReceiver, figures: dict[str, Any]
) -> None:
    # Given the service (a deliveries worker of 16 threads) and a healthy client's deliveries'
    # latency when nothing else is happening
    stack = make_stack(env={"WEBHOOK_MAX_IN_FLIGHT_PER_HOST": str(MAX_IN_FLIGHT_PER_HOST)})
    stack.start_service(jobs=2, deliveries=16)
    healthy, hostile_client = stack.client(), stack.client()
    delivery_latencies(healthy, receiver, 3)
    quiet = delivery_latencies(healthy, receiver, PROBES, pause=PAUSE_SECONDS)

    # When another client has a thousand webhooks for a host that drips its headers (4 attempts
    # hang there at a time; the rest wait their turn)
    for index in range(BACKLOG):
        hostile_client.submit("api.tasks.hello_world", {"message": f"drip {index}"},
                              callback_url=hostile.url("drip-headers"))
    wait_for(lambda: hostile.in_flight >= MAX_IN_FLIGHT_PER_HOST, timeout=30, interval=0.05,
             what="the dripping receiver's slots all taken")
    time.sleep(5)  # the jobs finish and their deliveries start waiting

    def work_done() -> tuple[float, int, int]:
        """The deliveries worker's CPU seconds, PostgreSQL's commits, attempt rows deleted
        (each a delivery put back for its turn)."""
        stat = Path(f"/proc/{stack.processes['deliveries'].pid}/stat").read_text()
        ticks = sum(int(value) for value in stat.rsplit(")", 1)[1].split()[11:13])  # utime, stime
        [(commits,)] = stack.sql("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        [(deleted,)] = stack.sql("SELECT n_tup_del FROM pg_stat_user_tables WHERE relname = 'webhooks_deliveryattempt'")
        return ticks / os.sysconf("SC_CLK_TCK"), int(commits), int(deleted)

    before, attempts_before, started = work_done(), len(hostile.seen), time.monotonic()
    under_backlog = delivery_latencies(healthy, receiver, PROBES, pause=PAUSE_SECONDS)
    time.sleep(max(0.0, BACKLOG_WATCH_SECONDS - (time.monotonic() - started)))
    after, attempts_made, watched = work_done(), len(hostile.seen) - attempts_before, time.monotonic() - started

    # Then the healthy client's deliveries kept their normal latency (p50 within 2x)...
    quiet_p50, backlog_p50 = statistics.median(quiet), statistics.median(under_backlog)
    cpu, commits, put_backs = ((a - b) / watched for a, b in zip(after, before, strict=True))
    figures.update(
        quiet_p50_ms=round(quiet_p50 * 1000, 1), backlog_p50_ms=round(backlog_p50 * 1000, 1),
        backlog_max_ms=round(max(under_backlog) * 1000, 1), backlog=BACKLOG,
        deliveries_worker_cpu_per_s=round(cpu, 3), commits_per_s=round(commits, 1),
        put_backs_per_s=round(put_backs, 1), dripping_attempts_per_s=round(attempts_made / watched, 1),
        dripping_max_in_flight=hostile.max_in_flight,
    )
    assert hostile.in_flight >= 1, "the dripping receiver was not holding attempts while the probes ran"
    assert backlog_p50 <= 2 * quiet_p50, figures
    assert hostile.max_in_flight <= MAX_IN_FLIGHT_PER_HOST, figures
    # ...and the waiting deliveries were claimed again only when a place of the host came free
    # (a batch's worth woken by the lane leaving it, and another if it was still free when the
    # batch parked its unsent ones), not over and over while they waited
    assert put_backs * watched <= 2 * BATCH_MAX_DELIVERIES * (attempts_made + MAX_IN_FLIGHT_PER_HOST), figures


# Just under a slow attempt (sending.SLOW_ATTEMPT_SECONDS): every attempt counts as quick.
QUICK_ANSWER_SECONDS = 0.45
# The quick client's jobs a second, more than its two places at its host send (about 4.4).
QUICK_JOBS_PER_SECOND = 10


def test_a_client_answering_just_quickly_with_more_than_its_share_slows_only_its_own_deliveries(
    make_stack: Callable[..., Stack], receiver: WebhookReceiver, figures: dict[str, Any]
) -> None:
    # Given the service (a deliveries worker of 16 threads), a healthy client and its
    # deliveries' latency when nothing else is happening
    stack = make_stack(env={"WEBHOOK_MAX_IN_FLIGHT_PER_HOST": "2"})
    stack.start_service(jobs=2, deliveries=16)
    healthy, quick_client = stack.client(), stack.client()
    delivery_latencies(healthy, receiver, 3)
    quiet = delivery_latencies(healthy, receiver, PROBES, pause=PAUSE_SECONDS)

    # When another client's receiver answers each webhook in 0.45 s (never a slow answer, so its
    # lanes keep their places, one attempt after another) and the client's jobs ask for more
    # webhooks than its share of that receiver sends: its webhooks wait their turn
    quick_receiver = WebhookReceiver(answer_delay_seconds=QUICK_ANSWER_SECONDS)
    quick_receiver.up()
    stop = threading.Event()

    def submit_quick_jobs() -> None:
        while not stop.wait(1 / QUICK_JOBS_PER_SECOND):
            quick_client.submit("api.tasks.hello_world", {"message": "quick"}, callback_url=quick_receiver.url)

    submitter = threading.Thread(target=submit_quick_jobs, daemon=True)
    submitter.start()
    try:
        time.sleep(10)  # a backlog builds up
        under_load = delivery_latencies(healthy, receiver, PROBES, pause=PAUSE_SECONDS)
    finally:
        stop.set()
        submitter.join()
        quick_receiver.down()
    [(waiting,)] = stack.sql("SELECT count(*) FROM webhooks_delivery WHERE state = 'pending'")

    # Then the healthy client's deliveries kept their normal latency, while the other client's
    # waited for its share
    quiet_p50, load_p50 = statistics.median(quiet), statistics.median(under_load)
    figures.update(
        quiet_p50_ms=round(quiet_p50 * 1000, 1), load_p50_ms=round(load_p50 * 1000, 1),
        load_max_ms=round(max(under_load) * 1000, 1), quick_received=len(quick_receiver.received),
        quick_waiting_at_end=waiting,
    )
    assert waiting > 0, "the quick client's webhooks did not wait for their share"
    assert load_p50 <= max(2 * quiet_p50, quiet_p50 + 0.1), figures
