"""The `streams` phase of bench/run.py: how soon `Prefer: wait` and an event stream hear that a
job finished, and what 500 waiters held open cost the API's submit and poll (docs/streams.md)."""
from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import requests

WAITERS = 500
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


def _open_waiters(url: str, key: str, job_id: str, count: int) -> list[socket.socket]:
    address = urlsplit(url)
    request = (f"GET /api/jobs/{job_id}/ HTTP/1.1\r\nHost: {address.netloc}\r\n"
               f"Authorization: Bearer {key}\r\nPrefer: wait=120\r\n\r\n").encode()
    waiters = []
    for _ in range(count):
        sock = socket.create_connection((address.hostname, address.port))
        sock.sendall(request)
        waiters.append(sock)
    return waiters


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


def measure(bench: Any, url: str, *, wrk: Any, wrk_script: Any, memory_of: Any, percentiles: Any,
            log: Any) -> dict[str, Any]:
    """The phase's figures (bench/run.py passes its helpers, to keep this module apart)."""
    samples = SAMPLES // 2 if bench.quick else SAMPLES
    keys = bench.clients(3, "streams")
    log(f"streams: {samples} waited submissions, finish -> answer")
    figures: dict[str, Any] = {"wait_answer": percentiles(_wait_latencies(url, keys[0], samples))}
    log(f"streams: {samples} streams, finish -> final event")
    figures["stream_final_event"] = percentiles(_stream_latencies(url, keys[1], samples))

    # A job that stays PENDING for the phase (scheduled an hour ahead), for the waiters to wait on.
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    pending = requests.post(f"{url}/api/jobs/", json=dict(HELLO, run_at=later), timeout=30,
                            headers={"Authorization": f"Bearer {keys[2]}"}).json()
    # Many clients, as the api phase has, so no client's rate limit is what is measured; poll
    # key i reads its own (finished) job i.
    poll_keys, submit_keys = bench.clients(32, "streams-poll"), bench.clients(64, "streams-submit")
    polled = [bench.seed_jobs(owner_id=bench.client_of(key), count=1)[0] for key in poll_keys]
    poll = wrk_script(method="GET", paths=[f"/api/jobs/{i}/" for i in polled], keys=poll_keys)
    submit = wrk_script(method="POST", paths=["/api/jobs/"], keys=submit_keys, body=json.dumps(HELLO))
    seconds = 3 if bench.quick else 5
    pid = bench.pid("api-web")
    # The database's transactions a second before and while the waiters wait, measured before
    # any load (the worker's backlog of submitted jobs would swamp them).
    time.sleep(2)
    quiet: dict[str, Any] = {"database_transactions_per_second": _transactions_per_second(), "memory": memory_of(pid)}
    log(f"streams: {WAITERS} waiters held open")
    waiters = _open_waiters(url, keys[2], pending["id"], WAITERS)
    try:
        time.sleep(3)  # each has read the job once
        held = {"database_transactions_per_second": _transactions_per_second(), "memory": memory_of(pid)}
        log(f"streams: submit and poll beside {WAITERS} waiters")
        held["submit"] = wrk(url, submit, seconds=seconds, workdir=bench.workdir, server_pid=pid)
        held["poll"] = wrk(url, poll, seconds=seconds, workdir=bench.workdir, server_pid=pid)
    finally:
        for sock in waiters:
            sock.close()
    log("streams: submit and poll, no waiters")
    time.sleep(2)
    quiet["submit"] = wrk(url, submit, seconds=seconds, workdir=bench.workdir, server_pid=pid)
    quiet["poll"] = wrk(url, poll, seconds=seconds, workdir=bench.workdir, server_pid=pid)
    figures["without_waiters"], figures[f"with_{WAITERS}_waiters"] = quiet, held
    figures["ratios_with_waiters"] = {
        name: round(held[name]["rps"] / quiet[name]["rps"], 2) for name in ("submit", "poll")
    }
    return figures
