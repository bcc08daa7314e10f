"""`make bench`: start the production-like stack, measure it against the baseline app, write the
figures to docs/benchmarks.md (between the generated-section markers) and bench/results.json.

Everything it starts (gunicorn, Celery workers, the webhook receiver) runs in a process group of
its own and is stopped on exit, Ctrl-C included. It uses a database (`jobapi_bench`) and Redis
databases (12 and 13) of its own, and drops/flushes them when it is done.

    .venv/bin/python -m bench.run            # the full run (about 11 minutes on 2 cores)
    .venv/bin/python -m bench.run --quick    # short runs, 10k rows only: for working on it
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import streams

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")
BENCH_DB = "jobapi_bench"
BROKER_DB = 12  # broker and cache (throttle counters)
WEBHOOKS_WORKER_THREADS = 16  # the Procfile's deliveries worker
# Threads recording the delivery phase's events: one loop alone records more slowly than a
# worker delivers, and would measure itself.
DELIVERY_RECORDERS = 4
RESULT_DB = 13  # the raw round trip's result backend only
CONNECTIONS = 16
# Background submissions (with callbacks) while the end-to-end probes run "under load", as a
# fraction of the jobs per second the stack was measured to sustain.
LOAD_FRACTION = 0.5
WRK_THREADS = 2
# Each API figure and its ceiling are measured in this many alternating rounds (ceiling, API,
# ceiling, API, ...), of ROUND_SECONDS each: the machine's speed drifts over minutes, and a
# ceiling measured minutes before its API figure moved the ratio by a third between runs. One
# round's ratio still varies by about a tenth, and a round disturbed by something else on the
# machine by a half: the verdicts take the median of seven rounds' ratios (bench/report.py;
# decided on 2026-12-03 before that day's runs, after one disturbed round of five had moved
# a ratio of the rounds' totals by a quarter).
ROUNDS = 7
ROUND_SECONDS = 4
# Seconds between opening the waiters and measuring beside them (each has read its job), and
# after closing them before the next measurement.
WAITERS_SETTLE_SECONDS = 2
HELLO = {"job_name": "api.tasks.hello_world", "payload": {"message": "bench"}}
# The sequential end-to-end probes and the raw round trips (their ceiling) alternate in blocks
# of this many: two full-run raw figures taken a minute apart were 5.4 and 7.9 ms.
E2E_BLOCK = 10
# Clients polling, each its own jobs (1024 in all, as the single poller's 1000 before).
POLL_CLIENTS = 32
POLL_JOBS_EACH = 32
# Jobs per batch submission measured beside the single submission.
BATCH_SIZE = 100
# The outside load test's shape (issue 21): gunicorn workers and clients round-robin.
OUTSIDE_WORKERS = 4
OUTSIDE_CLIENTS = 48
# The API's second server, the same with METRICS_ENABLED=true, measured in the same rounds.
METRICS_WEB = "api-web-metrics"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p95/p99 in milliseconds (nearest-rank)."""
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]

    return {
        "n": len(ordered),
        "p50_ms": round(rank(50) * 1000, 2),
        "p95_ms": round(rank(95) * 1000, 2),
        "p99_ms": round(rank(99) * 1000, 2),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
    }


# --- Processes -------------------------------------------------------------------------------


@dataclass
class Stack:
    """Every process the harness started, so that all of them are stopped on the way out."""

    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="jobapi-bench-")))

    def start(
        self, name: str, argv: list[str], env: dict[str, str], stdout: Any = None, stdin: Any = None
    ) -> subprocess.Popen[bytes]:
        log_file = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdin=stdin,
            stdout=stdout or log_file,
            stderr=log_file,
            start_new_session=True,  # its own process group: stopping it stops its children
        )
        self.processes[name] = process
        return process

    def stop(self, name: str, timeout: float = 20) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        # The group leader first (gunicorn's master, Celery's main process): it stops its own
        # children gracefully; whatever is left in the group is killed afterwards.
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        # A pool child that outlived its parent is still in the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)

    def tail(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def wait_http(url: str, stack: Stack, name: str, timeout: float = 60) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process = stack.processes.get(name)
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{name} exited early:\n{stack.tail(name)}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code < 500:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{name} did not answer {url} in {timeout}s:\n{stack.tail(name)}")


def wait_celery(app: Any, name: str, stack: Stack, proc_name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process = stack.processes.get(proc_name)
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{proc_name} exited early:\n{stack.tail(proc_name)}")
        if app.control.ping(destination=[name], timeout=0.5):
            return
    raise RuntimeError(f"{proc_name} did not come up:\n{stack.tail(proc_name)}")


def process_stats() -> Iterator[tuple[int, str, list[str]]]:
    """Every process's pid, name and the fields of /proc/<pid>/stat after the name."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name, fields = stat.split("(", 1)[1].rsplit(")", 1)
        yield int(entry.name), name, fields.split()


def process_tree(pid: int) -> list[int]:
    """pid and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for member, _name, fields in process_stats():
        children.setdefault(int(fields[1]), []).append(member)
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process tree so far: its live members, and the members
    that exited and were reaped (gunicorn recycles a worker after `max_requests`; its time
    is then in the master's cutime and cstime)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return total / ticks


# The stores every request also spends CPU in: the database's and Redis's server processes.
STORE_PROCESSES = {"postgres": "postgres", "redis": "redis-server"}


def store_cpu_seconds() -> dict[str, float]:
    """User + system CPU time so far of every PostgreSQL and of every Redis server process on
    the machine (the benchmark's stores: nothing else uses them while it runs), with that of
    their exited children: a backend whose connection closed during a measurement counts in
    the postmaster's cutime and cstime once reaped (leaving it out once made a round's
    PostgreSQL CPU negative)."""
    ticks = os.sysconf("SC_CLK_TCK")
    totals = dict.fromkeys(STORE_PROCESSES, 0)
    names = {process: store for store, process in STORE_PROCESSES.items()}
    for _pid, name, fields in process_stats():
        if name in names:
            totals[names[name]] += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return {store: total / ticks for store, total in totals.items()}


def memory_of(pid: int) -> dict[str, Any]:
    """RSS of each process in the tree and the tree's PSS (shared pages split fairly), in MiB."""
    rss, pss = [], 0.0
    for member in process_tree(pid):
        try:
            rollup = Path(f"/proc/{member}/smaps_rollup").read_text()
        except OSError:
            continue
        fields = {
            line.split(":")[0]: int(line.split()[1]) for line in rollup.splitlines()[1:] if ":" in line
        }
        rss.append(round(fields.get("Rss", 0) / 1024, 1))
        pss += fields.get("Pss", 0) / 1024
    return {"processes": len(rss), "rss_mib_each": rss, "pss_mib_total": round(pss, 1)}


# --- wrk -------------------------------------------------------------------------------------

WRK_DONE = r"""
done = function(summary, latency, requests)
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"errors_connect":%d,"errors_read":%d,' ..
    '"errors_write":%d,"errors_status":%d,"errors_timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""


def lua_list(values: list[str]) -> str:
    return "{" + ",".join(json.dumps(v) for v in values) + "}"


def wrk_script(
    *, method: str, paths: list[str], keys: list[str] | None = None, body: str | None = None
) -> str:
    """A wrk script that rotates over `paths` (and API keys), `body` for POSTs."""
    headers = '{["Content-Type"]="application/json"}'
    return (
        f"local paths = {lua_list(paths)}\n"
        f"local keys = {lua_list(keys or [])}\n"
        f"local body = {json.dumps(body) if body else 'nil'}\n"
        "local i = math.random(1, 100000)\n"
        "request = function()\n"
        "  i = i + 1\n"
        f"  local h = {headers}\n"
        '  if #keys > 0 then h["Authorization"] = "Bearer " .. keys[(i % #keys) + 1] end\n'
        f'  return wrk.format("{method}", paths[(i % #paths) + 1], h, body)\n'
        "end\n" + WRK_DONE
    )


def wrk(
    base_url: str,
    script: str,
    *,
    seconds: int,
    connections: int = CONNECTIONS,
    threads: int = WRK_THREADS,
    workdir: Path,
    server_pid: int | None = None,
) -> dict[str, Any]:
    """Run wrk; with server_pid, also the server's CPU time per request (robust to a busy
    machine, unlike requests per second)."""
    import resource

    cpu_before = cpu_seconds(server_pid) if server_pid else 0.0
    stores_before = store_cpu_seconds()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    path = workdir / f"wrk-{uuid.uuid4().hex[:8]}.lua"
    path.write_text(script)
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
         "--timeout", "10s", "-s", str(path), base_url],
        capture_output=True, text=True, check=True,
    ).stdout
    stores_after = store_cpu_seconds()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    line = next(line for line in out.splitlines() if line.startswith("WRKJSON "))
    raw = json.loads(line[len("WRKJSON "):])
    seconds_run = raw["duration_us"] / 1e6
    ok = raw["requests"] - raw["errors_status"]
    cpu_ms = (
        round((cpu_seconds(server_pid) - cpu_before) * 1000 / max(1, raw["requests"]), 2)
        if server_pid else None
    )
    return {
        "server_cpu_ms_per_request": cpu_ms,
        **{
            f"{store}_cpu_ms_per_request": round(
                (stores_after[store] - stores_before[store]) * 1000 / max(1, raw["requests"]), 2
            )
            for store in STORE_PROCESSES
        },
        # The load generator's own cost: far below the server's, so wrk is not the bottleneck.
        "wrk_cpu_ms_per_request": round(wrk_cpu * 1000 / max(1, raw["requests"]), 3),
        "connections": connections,
        "seconds": round(seconds_run, 2),
        "requests": raw["requests"],
        "non_2xx_3xx": raw["errors_status"],
        "socket_errors": raw["errors_connect"] + raw["errors_read"] + raw["errors_write"]
        + raw["errors_timeout"],
        "rps": round(ok / seconds_run, 1),
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p90_ms": round(raw["p90_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "max_ms": round(raw["max_us"] / 1000, 2),
    }


def combined(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One figure from the rounds of one measurement: requests per second over all of them,
    CPU per request weighted by requests, the median round's p50 and p90, the worst round's
    p99 and max (percentiles do not add up), and each round's own rate."""
    requests = sum(r["requests"] for r in rounds)
    seconds = sum(r["seconds"] for r in rounds)

    def per_request(key: str, digits: int) -> float | None:
        if any(r[key] is None for r in rounds):
            return None
        return round(sum(r[key] * r["requests"] for r in rounds) / max(1, requests), digits)

    return {
        "server_cpu_ms_per_request": per_request("server_cpu_ms_per_request", 2),
        **{f"{store}_cpu_ms_per_request": per_request(f"{store}_cpu_ms_per_request", 2)
           for store in STORE_PROCESSES},
        "wrk_cpu_ms_per_request": per_request("wrk_cpu_ms_per_request", 3),
        "connections": rounds[0]["connections"],
        "seconds": round(seconds, 2),
        "requests": requests,
        "non_2xx_3xx": sum(r["non_2xx_3xx"] for r in rounds),
        "socket_errors": sum(r["socket_errors"] for r in rounds),
        "rps": round(sum(r["requests"] - r["non_2xx_3xx"] for r in rounds) / seconds, 1),
        "p50_ms": statistics.median(r["p50_ms"] for r in rounds),
        "p90_ms": statistics.median(r["p90_ms"] for r in rounds),
        "p99_ms": max(r["p99_ms"] for r in rounds),
        "max_ms": max(r["max_ms"] for r in rounds),
        "rounds_rps": [r["rps"] for r in rounds],
    }


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("wrk is missing: installing the Debian package")
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False)
        found = shutil.which("wrk")
    if not found:
        sys.exit("wrk is required: install it (Debian/Ubuntu: `sudo apt-get install wrk`).")
    return found


def wrk_version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)  # exits 1
    return (out.stdout + out.stderr).strip().splitlines()[0]


# --- Database and Redis ----------------------------------------------------------------------


def admin_sql(sql: str) -> None:
    import psycopg2

    connection = psycopg2.connect(f"{PG_ADMIN_URL}/postgres")
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(sql)
    connection.close()


def redis_flush() -> None:
    import redis

    for db in (BROKER_DB, RESULT_DB):
        redis.Redis.from_url(f"{REDIS_URL}/{db}").flushdb()


def base_env(secret: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("CELERY_", "DJANGO_", "TEST_", "POSTGRES_", "WEB_", "DATABASE_"))
    }
    env.update(
        {
            "DATABASE_URL": f"{PG_ADMIN_URL}/{BENCH_DB}",
            "CELERY_BROKER_URL": f"{REDIS_URL}/{BROKER_DB}",
            "CACHE_URL": f"{REDIS_URL}/{BROKER_DB}",
            "SECRET_KEY": secret,
            "DEBUG": "false",
            "HOST": "127.0.0.1",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LOG_LEVEL": "WARNING",
            # The webhook receiver is local: let deliveries reach loopback (production: unset).
            "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
            "DATA_DIR": tempfile.mkdtemp(prefix="jobapi-bench-data-"),
            # The metrics files in memory, as in production, but this run's own: scripts/web's
            # default (/dev/shm/jobapi-metrics) is shared with a service running on this host,
            # whose files it would empty.
            "METRICS_DIR": tempfile.mkdtemp(prefix="jobapi-bench-metrics-",
                                            dir="/dev/shm" if os.path.isdir("/dev/shm") else None),
            # scripts/web and scripts/worker run the binaries of this interpreter's venv.
            "VIRTUAL_ENV": sys.prefix,
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


# --- The measurements ------------------------------------------------------------------------


@dataclass
class Bench:
    quick: bool
    stack: Stack
    env: dict[str, str]
    workdir: Path
    profile: bool = False
    profiling: list[str] = field(default_factory=list)
    baseline_url: str = ""
    baseline_ids: list[str] = field(default_factory=list)
    # (key, job id): the pending jobs the waiters held beside some rounds wait on.
    waiting_jobs: list[tuple[str, str]] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def load_seconds(self) -> int:
        return 4 if self.quick else 12

    def phase(self, name: str, run: Any) -> None:
        """Run one measurement; a failure is reported (and the rest still runs)."""
        try:
            run()
        except Exception as exc:  # noqa: BLE001 (a report with one phase missing beats none)
            import traceback

            log(f"phase {name} failed: {exc!r}")
            traceback.print_exc()
            self.results.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"[:500]

    def pid(self, name: str = "") -> int | None:
        """The pid of the web server being measured (the baseline's or the API's)."""
        for candidate in (name, "baseline-web", "api-web", METRICS_WEB):
            if candidate and candidate in self.stack.processes:
                return self.stack.processes[candidate].pid
        return None

    def manage(self, *args: str, settings: str = "core.settings") -> None:
        env = dict(self.env, DJANGO_SETTINGS_MODULE=settings)
        subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, check=True,
                       stdout=subprocess.DEVNULL)

    def web(self, name: str, settings: str, **extra: str) -> str:
        port = free_port()
        env = dict(self.env, DJANGO_SETTINGS_MODULE=settings, PORT=str(port), **extra)
        self.stack.start(name, [str(REPO / "scripts" / "web")], env)
        return f"http://127.0.0.1:{port}"

    def worker(self, name: str, queues: str, **extra: str) -> None:
        from core.celery import app

        env = dict(self.env, DJANGO_SETTINGS_MODULE="core.settings", QUEUES=queues,
                   WORKER_NAME=f"bench-{name}", **extra)
        self.stack.start(name, [str(REPO / "scripts" / "worker")], env)
        wait_celery(app, f"bench-{name}@{socket.gethostname()}", self.stack, name)

    # Baseline ----------------------------------------------------------------------------------

    def baseline(self) -> None:
        from django.db import connection

        log("baseline app: migrate, seed 1000 rows, start gunicorn")
        self.manage("migrate", "bench", settings="bench.settings")
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO bench_benchrow (id, name, payload, created_at) "
                "SELECT gen_random_uuid(), 'api.tasks.hello_world', '{\"message\": \"bench\"}', now() "
                "FROM generate_series(1, 1000)"
            )
            cursor.execute("SELECT id FROM bench_benchrow")
            ids = [str(row[0]) for row in cursor.fetchall()]
        url = self.web("baseline-web", "bench.settings")
        wait_http(f"{url}/constant/", self.stack, "baseline-web")
        self.warm(url, "/constant/")
        figures: dict[str, Any] = {}
        log("baseline: constant view")
        figures["constant"] = wrk(url, wrk_script(method="GET", paths=["/constant/"]),
                                  seconds=self.load_seconds, workdir=self.workdir, server_pid=self.pid("baseline-web"))
        self.warm(url, f"/rows/{ids[0]}/")
        self.baseline_url, self.baseline_ids = url, ids
        self.results["baseline"] = figures
        # Reading one row and inserting one are measured in rounds beside the API's poll and
        # submit (api_submit_poll); the server stays up until then.

    def warm(self, url: str, path: str, headers: dict[str, str] | None = None) -> None:
        """Touch every gunicorn worker (imports, connections) before measuring."""
        import requests

        session = requests.Session()
        for _ in range(60):
            session.get(url + path, headers=headers, timeout=10)

    def redis_delete(self, *keys: str) -> None:
        import redis

        redis.Redis.from_url(f"{REDIS_URL}/{BROKER_DB}").delete(*keys)

    # The API -----------------------------------------------------------------------------------

    def cold_start(self, url: str, key: str) -> None:
        """The first submit and poll a fresh gunicorn worker serves (imports, connections)."""
        import requests

        headers = {"Authorization": f"Bearer {key}"}
        started = time.monotonic()
        job = requests.post(f"{url}/api/jobs/", json=HELLO, headers=headers, timeout=60)
        submitted = time.monotonic()
        requests.get(f"{url}/api/jobs/{job.json()['id']}/", headers=headers, timeout=60)
        polled = time.monotonic()
        self.results["cold_start"] = {"first_submit_ms": round((submitted - started) * 1000, 1),
                                      "first_poll_ms": round((polled - submitted) * 1000, 1)}

    def profile_start(self, label: str, process: str) -> None:
        """With --profile: py-spy samples the process tree while the load runs."""
        if not self.profile:
            return
        out = REPO / "bench" / "profiles" / f"{label}-{process}.txt"
        out.parent.mkdir(exist_ok=True)
        self.stack.start(
            f"py-spy-{label}-{process}",
            [str(Path(sys.prefix) / "bin" / "py-spy"), "record", "--pid",
             str(self.stack.processes[process].pid), "--subprocesses", "--format", "raw",
             "--rate", "200", "--output", str(out), "--nonblocking"],
            dict(os.environ),
        )
        self.profiling.append(f"py-spy-{label}-{process}")

    def profile_stop(self) -> None:
        for name in self.profiling:
            # SIGINT makes py-spy write its output and exit.
            process = self.stack.processes[name]
            process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
            self.stack.stop(name)
        self.profiling = []

    def clients(self, count: int, prefix: str) -> list[str]:
        from core.services import api_key_create, client_create

        return [api_key_create(client=client_create(name=f"{prefix}-{i}")) for i in range(count)]

    def api_submit_poll(self, *, measure: bool = True) -> str:
        from django.db import connection

        log("API: start gunicorn (no Celery worker yet: submit is measured like its ceiling)")
        url = self.web("api-web", "core.settings")
        wait_http(f"{url}/healthz", self.stack, "api-web")
        # Many clients, because the default per-client submit rate limit stays on.
        submit_keys = self.clients(128, "submit")
        # Many pollers too: each client's reads have a budget (API_READ_RATE_PER_MINUTE), and
        # one client polling at a few thousand a second, on two servers, would spend it.
        poll_keys = self.clients(POLL_CLIENTS, "poll")
        poll_key = poll_keys[0]
        self.cold_start(url, submit_keys[-1])
        if not measure:
            self.paired_rounds({})
            return url
        import requests

        self.warm(url, "/api/jobs/?page_size=1", {"Authorization": f"Bearer {poll_key}"})
        for key in submit_keys[:60]:  # every worker serves a few submissions before measuring
            requests.post(f"{url}/api/jobs/", json=HELLO, headers={"Authorization": f"Bearer {key}"},
                          timeout=30)

        probe = requests.post(f"{url}/api/jobs/", json=HELLO,
                              headers={"Authorization": f"Bearer {submit_keys[0]}"}, timeout=10)
        assert probe.status_code == 202, probe.text
        ids_of = [self.seed_jobs(owner_id=self.client_of(key), count=POLL_JOBS_EACH) for key in poll_keys]
        # wrk takes request i's key and path at i modulo their counts: path j is keys[j % K]'s job.
        ids = [ids_of[k][n] for n in range(POLL_JOBS_EACH) for k in range(POLL_CLIENTS)]
        # The same API with metrics on, beside it: each round measures both (docs/benchmarks.md).
        metrics_url = self.web(METRICS_WEB, "core.settings", METRICS_ENABLED="true", METRICS_TOKEN="bench")
        wait_http(f"{metrics_url}/healthz", self.stack, METRICS_WEB)
        self.warm(metrics_url, "/api/jobs/?page_size=1", {"Authorization": f"Bearer {poll_key}"})
        for key in submit_keys[60:120]:
            requests.post(f"{metrics_url}/api/jobs/", json=HELLO, headers={"Authorization": f"Bearer {key}"},
                          timeout=30)
        poll = wrk_script(method="GET", paths=[f"/api/jobs/{i}/" for i in ids], keys=poll_keys)
        submit = wrk_script(method="POST", paths=["/api/jobs/"], keys=submit_keys, body=json.dumps(HELLO))
        # The waits held open beside some rounds: on pending jobs of their own clients'.
        self.waiting_jobs = streams.pending_jobs(url, self.clients(streams.WAITING_CLIENTS, "waiting"))
        self.results["api"] = {"waiters": {"held": streams.WAITERS, "clients": streams.WAITING_CLIENTS,
                                           "recycled": 0, "refused": 0}}
        figures = self.paired_rounds({
            "poll": (url, poll), "poll_metrics_on": (metrics_url, poll), "poll_beside_waiters": (url, poll),
            "submit": (url, submit), "submit_metrics_on": (metrics_url, submit), "submit_beside_waiters": (url, submit),
        })
        # Batch submission (POST /api/jobs/batch/): jobs per second against the single endpoint's.
        log(f"API: POST /api/jobs/batch/ with {BATCH_SIZE} jobs a request")
        batch = wrk_script(method="POST", paths=["/api/jobs/batch/"], keys=submit_keys,
                           body=json.dumps({"jobs": [HELLO] * BATCH_SIZE}))
        figures["submit_batch"] = wrk(url, batch, seconds=self.load_seconds, workdir=self.workdir,
                                      server_pid=self.pid("api-web"))
        figures["submit_batch"]["jobs_per_request"] = BATCH_SIZE
        scrape = requests.get(f"{metrics_url}/metrics", headers={"Authorization": "Bearer bench"}, timeout=30)
        assert scrape.status_code == 200 and "jobapi_jobs_submitted_total" in scrape.text, scrape.text[:500]
        self.stack.stop(METRICS_WEB)
        # The queued messages have no consumer by design: drop them and close their jobs.
        self.redis_delete("jobs")
        with connection.cursor() as cursor:
            cursor.execute("UPDATE jobs_job SET status = 'REVOKED', finished_at = now() "
                           "WHERE status = 'PENDING'")
        # The same poll with the per-process key-check memory off: its effect, in this run.
        self.stack.stop("api-web")
        url = self.web("api-web", "core.settings", API_KEY_CACHE_SECONDS="0")
        wait_http(f"{url}/healthz", self.stack, "api-web")
        self.warm(url, f"/api/jobs/{ids[0]}/", {"Authorization": f"Bearer {poll_keys[0]}"})
        log("API: GET /api/jobs/<id>/ with API_KEY_CACHE_SECONDS=0")
        figures["poll_key_cache_off"] = wrk(
            url, poll,
            seconds=self.load_seconds, workdir=self.workdir, server_pid=self.pid("api-web"),
        )
        self.stack.stop("api-web")
        url = self.web("api-web", "core.settings")
        wait_http(f"{url}/healthz", self.stack, "api-web")
        self.results["api"].update(figures)
        return url

    def paired_rounds(self, api: dict[str, tuple[str, str]]) -> dict[str, Any]:
        """Measure the API's poll and submit (`api`: name -> (url, wrk script)) in ROUNDS rounds,
        each beside its ceiling, the baseline's read and insert, when the baseline runs, beside
        itself with metrics on, and beside itself holding WAITERS waits open: read, poll, poll
        with metrics, poll beside the waiters, insert, submit, ..., and again. Stores the
        baseline's figures; returns the API's."""
        pairs = [
            ("read_one_row", "poll", "poll_metrics_on", "poll_beside_waiters"),
            ("insert_and_publish", "submit", "submit_metrics_on", "submit_beside_waiters"),
        ]
        scripts: dict[str, tuple[str, str, str]] = {
            name: (url, script, METRICS_WEB if name.endswith("_metrics_on") else "api-web")
            for name, (url, script) in api.items()
        }
        if self.baseline_url:
            paths = [f"/rows/{i}/" for i in self.baseline_ids]
            scripts["read_one_row"] = (self.baseline_url, wrk_script(method="GET", paths=paths), "baseline-web")
            scripts["insert_and_publish"] = (
                self.baseline_url, wrk_script(method="POST", paths=["/rows/"], body=json.dumps(HELLO)), "baseline-web"
            )
        figures = self.alternate(scripts, [name for pair in pairs for name in pair if name in scripts])
        if self.baseline_url:
            baseline = self.results["baseline"]
            baseline.update({name: figures.pop(name) for name in ("read_one_row", "insert_and_publish")})
            baseline["memory_web"] = memory_of(self.stack.processes["baseline-web"].pid)
            self.stack.stop("baseline-web")
            self.redis_delete("bench_naive")
            self.baseline_url = ""
        return figures

    def alternate(self, scripts: dict[str, tuple[str, str, str]], order: list[str]) -> dict[str, Any]:
        """Run each wrk script (name -> (url, script, process)) once a round, in `order`, for
        ROUNDS rounds; each one's figures over its rounds."""
        seconds = 2 if self.quick else ROUND_SECONDS
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in order}
        for round_number in range(ROUNDS):
            for name in order:
                url, script, process = scripts[name]
                log(f"round {round_number + 1}/{ROUNDS}: {name} ({process})")
                profiled = round_number == 0 and process == "api-web"
                if profiled:
                    self.profile_start(name, process)
                with self.waiters_beside(url, held=name.endswith("_beside_waiters")):
                    rounds[name].append(wrk(url, script, seconds=seconds, workdir=self.workdir,
                                            server_pid=self.pid(process)))
                if profiled:
                    self.profile_stop()
        return {name: combined(measured) for name, measured in rounds.items()}

    @contextlib.contextmanager
    def waiters_beside(self, url: str, *, held: bool) -> Iterator[None]:
        """With `held`: streams.WAITERS waits held open on the API throughout the block (on the
        waiting clients' pending jobs); those answered early are counted and opened again."""
        if not held:
            yield
            return
        with streams.HeldWaiters(url, self.waiting_jobs) as waiters:
            time.sleep(WAITERS_SETTLE_SECONDS)
            yield
        counts = self.results["api"]["waiters"]
        counts["recycled"] += waiters.recycled
        counts["refused"] += waiters.refused
        # The API ends each hung-up wait (a 499) before the next measurement, not during it.
        time.sleep(WAITERS_SETTLE_SECONDS)

    def outside_shape(self) -> None:
        """Submit and poll as an outside load test measures them: both apps on
        WEB_CONCURRENCY=4, 48 clients round-robin, the default limits, beside the baseline's
        naive views in alternating rounds."""
        from django.db import connection

        if not self.baseline_ids:
            log("outside shape: needs the baseline phase's rows; skipped")
            return
        base = self.web("baseline-outside", "bench.settings", WEB_CONCURRENCY=str(OUTSIDE_WORKERS))
        api = self.web("api-outside", "core.settings", WEB_CONCURRENCY=str(OUTSIDE_WORKERS))
        wait_http(f"{base}/constant/", self.stack, "baseline-outside")
        wait_http(f"{api}/healthz", self.stack, "api-outside")
        keys = self.clients(OUTSIDE_CLIENTS, "outside")
        ids_of = [self.seed_jobs(owner_id=self.client_of(key), count=8) for key in keys]
        ids = [ids_of[k][n] for n in range(8) for k in range(len(keys))]
        self.warm(base, f"/rows/{self.baseline_ids[0]}/")
        self.warm(api, f"/api/jobs/{ids[0]}/", {"Authorization": f"Bearer {keys[0]}"})
        rows = [f"/rows/{i}/" for i in self.baseline_ids]
        scripts = {
            "read_one_row": (base, wrk_script(method="GET", paths=rows), "baseline-outside"),
            "poll": (api, wrk_script(method="GET", paths=[f"/api/jobs/{i}/" for i in ids], keys=keys), "api-outside"),
            "insert_and_publish": (base, wrk_script(method="POST", paths=["/rows/"], body=json.dumps(HELLO)),
                                   "baseline-outside"),
            "submit": (api, wrk_script(method="POST", paths=["/api/jobs/"], keys=keys, body=json.dumps(HELLO)),
                       "api-outside"),
        }
        self.results["outside"] = {
            "web_concurrency": OUTSIDE_WORKERS, "clients": OUTSIDE_CLIENTS,
            **self.alternate(scripts, ["read_one_row", "poll", "insert_and_publish", "submit"]),
        }
        self.stack.stop("baseline-outside")
        self.stack.stop("api-outside")
        self.redis_delete("jobs", "bench_naive")
        with connection.cursor() as cursor:
            cursor.execute("UPDATE jobs_job SET status = 'REVOKED', finished_at = now() WHERE status = 'PENDING'")

    def client_of(self, key: str) -> str:
        from core.auth import api_key_digest
        from core.models import ApiKey

        return str(ApiKey.objects.get(digest=api_key_digest(key)).client_id)

    def seed_jobs(self, *, owner_id: str, count: int, with_results: bool = False) -> list[str]:
        """Finished hello_world jobs (and persisted results), inserted by one SQL statement each."""
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO jobs_job (id, owner_id, job_name, payload, status, progress, result,"
                " error, callback_url, webhook_events, cancel_requested, dispatched_at,"
                " created_at, started_at, finished_at, metadata, attempt, max_attempts,"
                " retry_backoff_seconds, webhook_endpoints, request_id) "
                "SELECT gen_random_uuid(), %s, 'api.tasks.hello_world', '{\"message\": \"bench\"}',"
                " 'SUCCESS', NULL, '\"hello world bench\"', NULL, '', '[]', false, t, t, t, t,"
                " jsonb_build_object('order', g::text), 1, 1, 0, true, '' "
                "FROM (SELECT g, now() - g * interval '1 millisecond' AS t"
                "      FROM generate_series(1, %s) g) s "
                "RETURNING id",
                [owner_id, count],
            )
            ids = [str(row[0]) for row in cursor.fetchall()] if count <= 10_000 else []
            if with_results:
                # A row trigger adds each result's size to its owner's counts row (the results
                # quota); a million updates of that one row in one statement take quadratic
                # time, so the seed goes in without it and the owner's total is counted once.
                cursor.execute("ALTER TABLE jobs_jobresult DISABLE TRIGGER USER")
                cursor.execute(
                    "INSERT INTO jobs_jobresult (owner_id, job_id, task_name, result, created_at) "
                    "SELECT %s, NULL, 'api.tasks.save_task_result_test_task',"
                    " '{\"value\": 1}', now() - g * interval '1 millisecond' "
                    "FROM generate_series(1, %s) g",
                    [owner_id, count],
                )
                cursor.execute("ALTER TABLE jobs_jobresult ENABLE TRIGGER USER")
                cursor.execute(
                    "INSERT INTO jobs_jobcounts AS existing (owner_id, unfinished, running, result_bytes) "
                    "SELECT %s, 0, 0, COALESCE(sum(octet_length(result::text)), 0) FROM jobs_jobresult "
                    "WHERE owner_id = %s "
                    "ON CONFLICT (owner_id) DO UPDATE SET result_bytes = EXCLUDED.result_bytes",
                    [owner_id, owner_id],
                )
        return ids

    # Query counts ------------------------------------------------------------------------------

    def query_counts(self) -> None:
        """Queries and Redis commands per submit and per poll, through Django's test client."""
        import redis
        from django.db import connection
        from django.test import Client as TestClient
        from django.test.utils import CaptureQueriesContext, override_settings

        log("API: queries per submit and per poll")
        key = self.clients(1, "queries")[0]
        client = TestClient(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {key}")
        commands: list[str] = []
        original = redis.Redis.execute_command
        original_pipeline = redis.client.Pipeline.execute

        def counting(self: Any, *args: Any, **options: Any) -> Any:
            commands.append(str(args[0]))
            return original(self, *args, **options)

        def counting_pipeline(self: Any, *args: Any, **kwargs: Any) -> Any:
            commands.append("PIPELINE(" + ",".join(str(c[0][0]) for c in self.command_stack) + ")")
            return original_pipeline(self, *args, **kwargs)

        figures: dict[str, Any] = {}
        redis.Redis.execute_command = counting  # type: ignore[method-assign]
        redis.client.Pipeline.execute = counting_pipeline  # type: ignore[method-assign]
        # Without request turns: a turn brings its own connection (core.concurrency), which the
        # capture below (on this thread's) would not see. The queries are the same.
        turns_off = override_settings(WEB_ACTIVE_REQUESTS=0)
        turns_off.enable()
        try:
            for label, call in (
                ("submit", lambda: client.post("/api/jobs/", HELLO, content_type="application/json")),
                ("submit_with_callback", lambda: client.post(
                    "/api/jobs/", dict(HELLO, callback_url="http://127.0.0.1:9/hook"),
                    content_type="application/json")),
            ):
                call()  # warm: first-use imports and connection set-up are not per request
                commands.clear()
                with CaptureQueriesContext(connection) as queries:
                    response = call()
                assert response.status_code == 202, response.content
                figures[label] = {"db_queries": len(queries), "sql": [q["sql"][:160] for q in queries],
                                  "redis_commands": list(commands)}
            job_id = response.json()["id"]
            client.get(f"/api/jobs/{job_id}/")
            commands.clear()
            with CaptureQueriesContext(connection) as queries:
                response = client.get(f"/api/jobs/{job_id}/")
            assert response.status_code == 200
            figures["poll"] = {"db_queries": len(queries), "sql": [q["sql"][:160] for q in queries],
                               "redis_commands": list(commands)}
        finally:
            redis.Redis.execute_command = original  # type: ignore[method-assign]
            redis.client.Pipeline.execute = original_pipeline  # type: ignore[method-assign]
            turns_off.disable()
        self.results["queries"] = figures

    # Workers: end to end and delivery --------------------------------------------------------

    def start_workers(self) -> None:
        log("start Celery workers (jobs, webhooks), beat, the bench echo worker and the receiver")
        self.worker("jobs-worker", "jobs,jobs_long")
        # As the Procfile and compose run it: a pool of threads (docs/deployment.md).
        self.worker("webhooks-worker", "webhooks,maintenance", WORKER_POOL="threads",
                    WORKER_THREADS=str(WEBHOOKS_WORKER_THREADS))
        self.stack.start("beat", [str(REPO / "scripts" / "beat")],
                         dict(self.env, DJANGO_SETTINGS_MODULE="core.settings"))
        echo_env = dict(self.env, DJANGO_SETTINGS_MODULE="bench.settings",
                        BENCH_RESULT_BACKEND=f"{REDIS_URL}/{RESULT_DB}")
        self.stack.start(
            "echo-worker",
            [str(Path(sys.prefix) / "bin" / "celery"), "-A", "bench.celery", "worker",
             "-Q", "bench_echo", "-c", "1", "-n", "bench-echo@%h", "--without-mingle",
             "--without-gossip", "-l", "warning"],
            echo_env,
        )
        self.receiver = Receiver(self.stack)

    def end_to_end(self, url: str) -> None:
        import requests

        keys = self.clients(9, "e2e")
        probe_key, load_keys = keys[0], keys[1:]
        samples = 30 if self.quick else 200
        session = requests.Session()

        probes: list[tuple[str, float, str]] = []  # job id, wall clock at submit, receiver path

        def probe() -> tuple[float, float]:
            token = uuid.uuid4().hex
            started, started_wall = time.monotonic(), time.time()
            response = session.post(
                f"{url}/api/jobs/",
                json=dict(HELLO, callback_url=f"{self.receiver.url}/e2e/{token}"),
                headers={"Authorization": f"Bearer {probe_key}"}, timeout=30,
            )
            accepted = time.monotonic()
            assert response.status_code == 202, response.text
            probes.append((response.json()["id"], started_wall, f"/e2e/{token}"))
            return accepted - started, self.receiver.wait(f"/e2e/{token}", timeout=30) - started

        for _ in range(10):
            probe()  # warm
        log(f"end to end, sequential: {samples} jobs, and as many raw Celery round trips "
            f"(apply_async().get()), alternating in blocks of {E2E_BLOCK}")
        submit: list[float] = []
        e2e: list[float] = []
        raw: list[float] = []
        roundtrip = RoundTrip(self.stack, dict(self.env, DJANGO_SETTINGS_MODULE="bench.settings",
                                               BENCH_RESULT_BACKEND=f"{REDIS_URL}/{RESULT_DB}"))
        try:
            for _ in range(samples // E2E_BLOCK):
                for accepted, arrived in (probe() for _ in range(E2E_BLOCK)):
                    submit.append(accepted)
                    e2e.append(arrived)
                raw += roundtrip.measure(E2E_BLOCK)
        finally:
            self.stack.stop(RoundTrip.NAME)
        self.results["raw_roundtrip"] = percentiles(raw)
        figures: dict[str, Any] = {"sequential": {"webhook": percentiles(e2e),
                                                   "submit_202": percentiles(submit),
                                                   "stages": self.stages(probes[10:])}}
        self.results["end_to_end"] = figures
        figures["capacity"] = self.capacity(url, load_keys)
        # Under load = half of what the stack sustains: loaded, but with no backlog growing.
        rate = max(2.0, round(figures["capacity"]["jobs_per_second"] * LOAD_FRACTION, 1))
        log(f"end to end under load: {rate} jobs/s with callbacks in the background")
        stop = threading.Event()
        sent, errors = [0], [0]

        def background(key: str, per_second: float) -> None:
            local = requests.Session()
            next_at = time.monotonic()
            while not stop.is_set():
                try:
                    local.post(f"{url}/api/jobs/",
                               json=dict(HELLO, callback_url=f"{self.receiver.url}/load/{sent[0]}"),
                               headers={"Authorization": f"Bearer {key}"}, timeout=30)
                    sent[0] += 1
                except requests.RequestException:
                    errors[0] += 1
                next_at += 1 / per_second
                time.sleep(max(0.0, next_at - time.monotonic()))

        threads = [threading.Thread(target=background, args=(key, rate / len(load_keys)), daemon=True)
                   for key in load_keys]
        for thread in threads:
            thread.start()
        try:
            time.sleep(2)
            loaded_started = time.monotonic()
            submit, e2e = zip(*(probe() for _ in range(samples // 2)))
            loaded_seconds = time.monotonic() - loaded_started
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        figures["under_load"] = {
            "background_jobs_per_second": rate,
            "load_fraction_of_capacity": LOAD_FRACTION,
            "background_jobs_sent": sent[0],
            "background_connection_errors": errors[0],
            "measured_seconds": round(loaded_seconds, 1),
            "webhook": percentiles(list(e2e)),
            "submit_202": percentiles(list(submit)),
        }
        self.results["end_to_end"] = figures

    def capacity(self, url: str, keys: list[str]) -> dict[str, Any]:
        """Jobs with callbacks per second, submit to webhook: a burst from 8 threads."""
        import requests

        count = 60 if self.quick else 240
        log(f"end to end capacity: a burst of {count} jobs with callbacks")
        tag = uuid.uuid4().hex[:8]
        started = time.monotonic()

        def submit(worker: int) -> None:
            session = requests.Session()
            for i in range(worker, count, len(keys)):
                session.post(f"{url}/api/jobs/",
                             json=dict(HELLO, callback_url=f"{self.receiver.url}/burst/{tag}/{i}"),
                             headers={"Authorization": f"Bearer {keys[worker]}"}, timeout=30)

        self.profile_start("capacity", "jobs-worker")
        self.profile_start("capacity", "webhooks-worker")
        threads = [threading.Thread(target=submit, args=(w,)) for w in range(len(keys))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        submitted = time.monotonic() - started
        last = max(self.receiver.wait(f"/burst/{tag}/{i}", timeout=120) for i in range(count))
        self.profile_stop()
        return {"jobs": count, "submitted_in_s": round(submitted, 2),
                "all_webhooks_in_s": round(last - started, 2),
                "jobs_per_second": round(count / (last - started), 1)}

    def stages(self, probes: list[tuple[str, float, str]]) -> dict[str, float]:
        """Median time of each stage of the sequential probes, from the rows' timestamps (ms)."""
        from jobs.models import Job
        from webhooks.models import DeliveryAttempt

        jobs = {str(j.id): j for j in Job.objects.filter(pk__in=[p[0] for p in probes])}
        attempts = {
            str(a.delivery.subject_id): a
            for a in DeliveryAttempt.objects.filter(delivery__subject_id__in=list(jobs), number=1)
            .select_related("delivery")
        }
        # Each timestamp is taken before the write it goes into: `created_at` before the payload's
        # validation and the INSERT, `started_at` before the start's UPDATE, `finished_at` before
        # the finish's, an attempt's `started_at` before the claim's statement. The names say so.
        stages: dict[str, list[float]] = {
            "submit -> row created (request, key, rate limit, parsing)": [],
            "row created -> started (validation, INSERT, publish, queue, worker)": [],
            "started -> finished (start's write and event, run)": [],
            "finished -> delivery attempt starts (finish's write and event, publish, queue)": [],
            "attempt starts -> receiver has it (claim, sign, send)": [],
        }
        for job_id, submitted, path in probes:
            job, attempt = jobs.get(job_id), attempts.get(job_id)
            if job is None or attempt is None or job.started_at is None or job.finished_at is None:
                continue
            points = [submitted, job.created_at.timestamp(), job.started_at.timestamp(),
                      job.finished_at.timestamp(), attempt.started_at.timestamp(),
                      self.receiver.wall[path]]
            for name, begin, end in zip(stages, points, points[1:]):
                stages[name].append(end - begin)
        return {name: round(statistics.median(v) * 1000, 2) for name, v in stages.items() if v}

    def delivery(self) -> None:
        import requests

        from core.services import api_key_create, client_create
        from webhooks import outbox

        count = 200 if self.quick else 1000
        owner = client_create(name="deliveries")
        api_key_create(client=owner)
        log(f"delivery: plain requests loop, {count} posts of the same bytes")
        event = outbox.event_body(
            event_type="job.succeeded",
            data={"id": str(uuid.uuid4()), "job_name": HELLO["job_name"], "status": "SUCCESS",
                  "result": "hello world bench", "payload": HELLO["payload"]},
            at=datetime.now(UTC),
        )
        headers = {"Content-Type": "application/json", "webhook-id": "msg_bench",
                   "webhook-timestamp": str(int(time.time())), "webhook-signature": "v1,bench"}
        figures: dict[str, Any] = {"body_bytes": len(event)}
        for label, poster in (("plain_requests_post", requests.post),
                              ("plain_requests_session", requests.Session().post)):
            started = time.monotonic()
            for i in range(count):
                poster(f"{self.receiver.url}/plain/{label}/{i}", data=event, headers=headers,
                       timeout=10)
            figures[label] = {"per_second": round(count / (time.monotonic() - started), 1)}
        data = json.loads(event)["data"]
        log(f"delivery: {count} signed webhooks through the webhooks worker, each recorded in a transaction of its own "
            f"(by {DELIVERY_RECORDERS} threads) while the worker does not consume, then drained")
        from core.celery import app

        # Recording in this process is slower than the worker delivers: measured with the worker
        # consuming, the rate was the recording's. So the deliveries (each recorded and handed
        # to the due queue on its own, as by a finishing job) are queued first, and the
        # worker's drain of them is what is measured.
        worker = [f"bench-webhooks-worker@{socket.gethostname()}"]
        app.control.cancel_consumer("webhooks", destination=worker, reply=True, timeout=10)

        def record(indexes: range) -> None:
            from django.db import connection

            try:
                for i in indexes:
                    outbox.event_record(
                        owner_id=owner.id, subject_id=uuid.uuid4(), event_type="job.succeeded",
                        data=data, callback_url=f"{self.receiver.url}/deliver/{i}",
                    )
            finally:
                connection.close()

        recorders = [threading.Thread(target=record, args=(range(n, count, DELIVERY_RECORDERS),))
                     for n in range(DELIVERY_RECORDERS)]
        recording_started = time.monotonic()
        for thread in recorders:
            thread.start()
        for thread in recorders:
            thread.join()
        recorded_in = time.monotonic() - recording_started
        self.profile_start("delivery", "webhooks-worker")
        started = time.monotonic()
        app.control.add_consumer("webhooks", destination=worker, reply=True, timeout=10)
        figures["service"] = self.arrivals("/deliver", count, started)
        figures["service"]["recorded_in_s"] = round(recorded_in, 2)
        figures["service"]["measured"] = "drain of queued deliveries, each recorded in a transaction of its own"
        self.profile_stop()
        figures["service"]["vs_session_loop"] = round(
            figures["service"]["per_second"] / figures["plain_requests_session"]["per_second"], 2)
        figures["service"]["vs_post_loop"] = round(
            figures["service"]["per_second"] / figures["plain_requests_post"]["per_second"], 2)
        self.results["delivery"] = figures

    def arrivals(self, prefix: str, count: int, since: float) -> dict[str, Any]:
        """Delivery rate from the first to the last arrival of `prefix`/0..count-1."""
        arrivals = sorted(self.receiver.wait(f"{prefix}/{i}", timeout=120) for i in range(count))
        return {
            "per_second": round((count - 1) / (arrivals[-1] - arrivals[0]), 1),
            "first_after_commit_ms": round((arrivals[0] - since) * 1000, 1),
            "all_after_commit_s": round(arrivals[-1] - since, 2),
        }

    def workers_memory(self) -> None:
        self.results["memory"] = {
            name: memory_of(self.stack.processes[name].pid)
            for name in ("api-web", "jobs-worker", "webhooks-worker")
            if name in self.stack.processes
        }

    def stop_workers(self) -> None:
        for name in ("jobs-worker", "webhooks-worker", "beat", "echo-worker", "receiver"):
            self.stack.stop(name)

    # Scale -------------------------------------------------------------------------------------

    def scale(self) -> None:
        """The list endpoints' cost at scale, on an API server of its own with the read limit
        off: each measurement reads one client's rows, and at 4 connections the five of a size
        spend more than a client's minute of reads (the fifth was answered 429, 93 % of it)."""
        from django.db import connection

        log("scale: start gunicorn with API_READ_RATE_PER_MINUTE=0")
        url = self.web("scale-web", "core.settings", API_READ_RATE_PER_MINUTE="0")
        wait_http(f"{url}/healthz", self.stack, "scale-web")
        sizes = [10_000] if self.quick else [10_000, 1_000_000]
        figures: dict[str, Any] = {}
        for size in sizes:
            key = self.clients(1, f"scale-{size}")[0]
            owner = self.client_of(key)
            log(f"scale: seeding {size} jobs and {size} results (INSERT ... SELECT generate_series)")
            started = time.monotonic()
            self.seed_jobs(owner_id=owner, count=size, with_results=True)
            with connection.cursor() as cursor:
                # A table at steady state has been vacuumed: without this, autovacuum (and the
                # first readers setting hint bits) would work on the fresh rows mid-measurement.
                cursor.execute("VACUUM (ANALYZE) jobs_job")
                cursor.execute("VACUUM (ANALYZE) jobs_jobresult")
                # ...and the WAL of a million-row insert is checkpointed now, not mid-measurement.
                cursor.execute("CHECKPOINT")
            seeded = round(time.monotonic() - started, 1)
            entry: dict[str, Any] = {"seed_seconds": seeded}
            for label, path in (("jobs_first_page", "/api/jobs/"),
                                ("jobs_deep_page", "/api/jobs/?cursor=" + self.deep_cursor(owner, size)),
                                ("results_first_page", "/api/results/"),
                                ("jobs_filtered_status", "/api/jobs/?status=SUCCESS"),
                                # one job in the middle of the owner's, by its metadata (seed_jobs)
                                ("jobs_filtered_metadata", f"/api/jobs/?metadata%5Border%5D={size // 2}")):
                log(f"scale {size}: GET {path[:40]}")
                entry[label] = wrk(url, wrk_script(method="GET", paths=[path], keys=[key]),
                                   seconds=3 if self.quick else 5, connections=4,
                                   workdir=self.workdir, server_pid=self.pid("scale-web"))
            figures[str(size)] = entry
        self.results["scale"] = figures
        self.stack.stop("scale-web")

    def deep_cursor(self, owner: str, size: int) -> str:
        """The cursor of the page in the middle of the owner's jobs (DRF's cursor encoding)."""
        from base64 import b64encode
        from urllib.parse import quote, urlencode

        from jobs.models import Job

        created = (Job.objects.filter(owner_id=owner).order_by("-created_at", "-pk")
                   .values_list("created_at", flat=True)[size // 2])
        return quote(b64encode(urlencode({"s": "-created_at,-pk", "p": str(created)}).encode()).decode())


class RoundTrip:
    """The raw round trip's client (bench/roundtrip.py), asked for a block of samples at a time."""

    NAME = "roundtrip"

    def __init__(self, stack: Stack, env: dict[str, str]) -> None:
        self.stack = stack
        self.process = stack.start(self.NAME, [sys.executable, "-m", "bench.roundtrip"], env,
                                   stdout=subprocess.PIPE, stdin=subprocess.PIPE)
        self._expect_line("ready")

    def measure(self, samples: int) -> list[float]:
        """`samples` sequential round trips' latencies (seconds)."""
        assert self.process.stdin is not None
        self.process.stdin.write(f"{samples}\n".encode())
        self.process.stdin.flush()
        return [float(latency) for latency in json.loads(self._expect_line())]

    def _expect_line(self, expected: str | None = None) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode().strip()
        if not line or (expected is not None and line != expected):
            raise RuntimeError(f"the round trip client stopped:\n{self.stack.tail(self.NAME)}")
        return line


class Receiver:
    """The webhook receiver process (bench/receiver.py) and a thread reading its arrivals."""

    def __init__(self, stack: Stack) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.arrivals: dict[str, float] = {}
        self.wall: dict[str, float] = {}
        self.condition = threading.Condition()
        self.process = stack.start("receiver", [sys.executable, "-m", "bench.receiver", str(port)],
                                   dict(os.environ), stdout=subprocess.PIPE)
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"receiver did not start:\n{stack.tail('receiver')}")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            arrived, wall, path, _ = line.decode().split(" ", 3)
            with self.condition:
                self.arrivals.setdefault(path, float(arrived))
                self.wall.setdefault(path, float(wall))
                self.condition.notify_all()

    def wait(self, path: str, timeout: float) -> float:
        """When `path` was first requested (CLOCK_MONOTONIC seconds)."""
        with self.condition:
            if not self.condition.wait_for(lambda: path in self.arrivals, timeout=timeout):
                raise RuntimeError(f"no request to {path} within {timeout}s")
            return self.arrivals[path]


def system_info() -> dict[str, Any]:
    import celery
    import django
    import gunicorn
    import psycopg2
    import redis
    import rest_framework
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg = cursor.fetchone()[0]
    import redis as redis_module

    redis_version = redis_module.Redis.from_url(f"{REDIS_URL}/{BROKER_DB}").info()["redis_version"]
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "djangorestframework": rest_framework.VERSION,
        "celery": celery.__version__,
        "gunicorn": gunicorn.__version__,
        "psycopg2": psycopg2.__version__.split()[0],
        "redis_py": redis.__version__,
        "postgresql": pg,
        "redis": redis_version,
        "wrk": wrk_version(),
        "load_average_at_start": os.getloadavg(),
    }


PHASES = ("baseline", "api", "outside", "queries", "e2e", "delivery", "streams", "scale")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, 10k rows only")
    parser.add_argument("--json", default=str(REPO / "bench" / "results.json"))
    parser.add_argument("--doc", default=str(REPO / "docs" / "benchmarks.md"))
    parser.add_argument("--no-doc", action="store_true", help="write only the JSON")
    parser.add_argument("--note", default="", help="a sentence for the report, e.g. what else ran")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy the API during submit and poll: bench/profiles/*.txt")
    parser.add_argument("--only", default="", help="comma-separated phases, for working on one: "
                        + ",".join(PHASES))
    args = parser.parse_args()

    ensure_wrk()
    started = time.monotonic()
    secret = secrets.token_urlsafe(40)
    env = base_env(secret)
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "core.settings"
    stack = Stack()
    log(f"logs in {stack.logs}")

    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    admin_sql(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
    admin_sql(f"CREATE DATABASE {BENCH_DB}")
    redis_flush()
    bench = Bench(quick=args.quick, stack=stack, env=env, workdir=stack.logs, profile=args.profile)
    try:
        bench.manage("migrate")
        import django

        django.setup()
        from django.conf import settings

        from core.web_defaults import WEB_PROCESSES_MAX, WEB_THREADS_DEFAULT

        bench.results["system"] = system_info()
        bench.results["config"] = {
            # gunicorn.conf.py's defaults (core/web_defaults.py).
            "gunicorn_workers": int(env.get("WEB_CONCURRENCY") or min((os.cpu_count() or 1) + 1, WEB_PROCESSES_MAX)),
            "gunicorn_threads": int(env.get("WEB_THREADS") or WEB_THREADS_DEFAULT),
            "celery_jobs_worker_concurrency": 2,
            "celery_webhooks_worker_concurrency": WEBHOOKS_WORKER_THREADS,
            "celery_webhooks_worker_pool": "threads",
            "wrk_connections": CONNECTIONS,
            "wrk_threads": WRK_THREADS,
            "api_submit_rate_per_minute": settings.API_SUBMIT_RATE_PER_MINUTE,
            "job_max_unfinished_per_client": settings.JOB_MAX_UNFINISHED_PER_CLIENT,
            "quick": args.quick,
        }
        only = set(filter(None, args.only.split(","))) or set(PHASES)
        if "baseline" in only:
            bench.phase("baseline", bench.baseline)
        url = bench.api_submit_poll(measure="api" in only)
        if "outside" in only:
            bench.phase("outside", bench.outside_shape)
        if "queries" in only:
            bench.phase("queries", bench.query_counts)
        if only & {"e2e", "delivery", "streams"}:
            bench.start_workers()
            if "e2e" in only:
                bench.phase("e2e", lambda: bench.end_to_end(url))
            if "delivery" in only:
                bench.phase("delivery", bench.delivery)
            if "streams" in only:
                bench.phase("streams", lambda: bench.results.__setitem__("streams", streams.measure(
                    bench, url, memory_of=memory_of, percentiles=percentiles, log=log,
                )))
            bench.workers_memory()
            bench.stop_workers()
        else:
            bench.workers_memory()
        if "scale" in only:
            bench.phase("scale", bench.scale)
    finally:
        stack.stop_all()
        for directory in (env["DATA_DIR"], env["METRICS_DIR"]):
            shutil.rmtree(directory, ignore_errors=True)
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        with contextlib.suppress(Exception):
            admin_sql(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        with contextlib.suppress(Exception):
            redis_flush()
        bench.results["elapsed_seconds"] = round(time.monotonic() - started, 1)
        bench.results["load_average_at_end"] = os.getloadavg()
        if args.note:
            bench.results["note"] = args.note
        Path(args.json).write_text(json.dumps(bench.results, indent=2) + "\n")
        log(f"wrote {args.json} in {bench.results['elapsed_seconds']} s")
        if not args.no_doc:
            from bench import report

            report.write(bench.results, Path(args.doc))
            log(f"wrote {args.doc}")


if __name__ == "__main__":
    main()
