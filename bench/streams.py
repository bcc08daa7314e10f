"""The `streams` phase of bench/run.py: how soon `Prefer: wait` and an event stream hear that a
job finished, and what 500 waiters held open cost the database and the API's memory; and the
waiters the api phase holds open beside some of its rounds (docs/streams.md)."""
from __future__ import annotations

import json
import select
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Self
from urllib.parse import urlsplit

import requests

WAITERS = 500
# The clients the waiters come from: each holds at most a share of a process's room for waits
# (API_MAX_WAITERS_PER_CLIENT, 61 by default), 25 of them here.
WAITING_CLIENTS = 20
SAMPLES = 40
HELLO = {"job_name": "api.tasks.hello_world", "payload": {"message": "bench"}}


def _finished(job: dict[str, Any]) -> float:
    return datetime.fromisoformat(job["finished_at"]).timestamp()


def _wait_latencies(url: str, key: str, samples: int) -> list[float]:
    """Seconds from each job's finished_at (the worker's clock: the same machine) to the
    waited submission's answer."""
    session, latencies = requests.Session(), []
    for _ in range(samples):
        response = session.post(f"{url}/api/jobs/", json=HELLO, timeout=60,
                                headers={"Authorization": f"Bearer {key}", "Prefer": "wait=30"})
        answered = time.time()
        job = response.json()
        assert response.status_code == 202 and job["status"] == "SUCCESS", response.text
        latencies.append(answered - _finished(job))
    return latencies


def _stream_latencies(url: str, key: str, samples: int) -> list[float]:
    """Seconds from each job's finished_at to its stream's final event."""
    session, latencies = requests.Session(), []
    headers = {"Authorization": f"Bearer {key}"}
    for _ in range(samples):
        job = session.post(f"{url}/api/jobs/", json=HELLO, headers=headers, timeout=30).json()
        with session.get(f"{url}/api/jobs/{job['id']}/events/", headers=headers, stream=True, timeout=30) as stream:
            for line in stream.iter_lines(chunk_size=1, decode_unicode=True):
                if line.startswith("data: ") and '"job.succeeded"' in line[:40]:
                    latencies.append(time.time() - _finished(json.loads(line[6:])["data"]))
                    break
    return latencies


def pending_jobs(url: str, keys: list[str]) -> list[tuple[str, str]]:
    """(key, job id): a job of each client's that stays pending for the run (scheduled an hour
    ahead), for its waiters to wait on."""
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    jobs = []
    for key in keys:
        response = requests.post(f"{url}/api/jobs/", json=dict(HELLO, run_at=later), timeout=30,
                                 headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 202, response.text
        jobs.append((key, response.json()["id"]))
    return jobs


def open_waiters(url: str, jobs: list[tuple[str, str]], count: int = WAITERS) -> list[socket.socket]:
    """`count` reads with `Prefer: wait=120` held open, spread over the clients' pending `jobs`
    (a client holds only a share of a process's waits: API_MAX_WAITERS_PER_CLIENT)."""
    address = urlsplit(url)
    waiters = []
    for index in range(count):
        key, job_id = jobs[index % len(jobs)]
        sock = socket.create_connection((address.hostname, address.port))
        sock.sendall((f"GET /api/jobs/{job_id}/ HTTP/1.1\r\nHost: {address.netloc}\r\n"
                      f"Authorization: Bearer {key}\r\nPrefer: wait=120\r\n\r\n").encode())
        waiters.append(sock)
    return waiters


def answered(waiters: list[socket.socket]) -> int:
    """How many of the waiters have had an answer (each should still be waiting)."""
    readable, _, _ = select.select(waiters, [], [], 0)
    return len(readable)


class HeldWaiters:
    """WAITERS waits held open on `jobs` while the block runs. A wait answered early is opened
    again at once, so the block runs beside all of them throughout: an API process answers its
    waits when it restarts (gunicorn's max_requests, docs/streams.md), or at once when its room
    for waits is full. `recycled` counts the first kind (its answer says the wait was applied),
    `refused` the second."""

    def __init__(self, url: str, jobs: list[tuple[str, str]], count: int = WAITERS) -> None:
        self.url, self.jobs, self.count = url, jobs, count
        self.recycled = self.refused = 0
        self._waiters: list[socket.socket] = []
        self._done = threading.Event()
        self._keeper = threading.Thread(target=self._keep, daemon=True)

    def __enter__(self) -> Self:
        self._waiters = open_waiters(self.url, self.jobs, self.count)
        self._keeper.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._keeper.join()
        for sock in self._waiters:
            sock.close()

    def _keep(self) -> None:
        while not self._done.wait(0.2):
            readable, _, _ = select.select(self._waiters, [], [], 0)
            for sock in readable:
                head = sock.recv(65536).split(b"\r\n\r\n", 1)[0].lower()
                if b"\r\npreference-applied:" in head:
                    self.recycled += 1
                else:
                    self.refused += 1
                sock.close()
                index = self._waiters.index(sock)
                self._waiters[index] = open_waiters(self.url, [self.jobs[index % len(self.jobs)]], 1)[0]


def _database_transactions() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
        cursor.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()")
        return int(cursor.fetchone()[0])


def _transactions_per_second(seconds: float = 5) -> float:
    before = _database_transactions()
    time.sleep(seconds)
    return round((_database_transactions() - before) / seconds, 1)


def measure(bench: Any, url: str, *, memory_of: Any, percentiles: Any, log: Any) -> dict[str, Any]:
    """The phase's figures (bench/run.py passes its helpers, to keep this module apart). What
    the waiters cost submit and poll is measured against their ceilings in the api phase's
    rounds (bench/run.py, paired_rounds)."""
    samples = SAMPLES // 2 if bench.quick else SAMPLES
    keys = bench.clients(2, "streams")
    log(f"streams: {samples} waited submissions, finish -> answer")
    figures: dict[str, Any] = {"wait_answer": percentiles(_wait_latencies(url, keys[0], samples))}
    log(f"streams: {samples} streams, finish -> final event")
    figures["stream_final_event"] = percentiles(_stream_latencies(url, keys[1], samples))

    jobs = pending_jobs(url, bench.clients(WAITING_CLIENTS, "streams-waiting"))
    pid = bench.pid("api-web")
    # The database's transactions a second before and while the waiters wait, with no other load.
    time.sleep(2)
    quiet: dict[str, Any] = {"database_transactions_per_second": _transactions_per_second(), "memory": memory_of(pid)}
    log(f"streams: {WAITERS} waiters held open")
    waiters = open_waiters(url, jobs)
    try:
        time.sleep(3)  # each has read the job once
        held = {"database_transactions_per_second": _transactions_per_second(), "memory": memory_of(pid),
                "answered_early": answered(waiters)}
    finally:
        for sock in waiters:
            sock.close()
    figures["without_waiters"], figures[f"with_{WAITERS}_waiters"] = quiet, held
    return figures
