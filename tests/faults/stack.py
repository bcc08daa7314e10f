"""A private copy of the whole service for fault tests: its own Redis, PostgreSQL, gunicorn,
Celery workers and beat, each a real process the tests may kill, stop or restart.

Nothing here touches the machine's shared PostgreSQL or Redis: the cluster is a temporary
`initdb` run as the `postgres` user (initdb/pg_ctl refuse root), the Redis a `redis-server` on an
ephemeral port. Processes are started through `scripts/web`, `scripts/worker` and `scripts/beat`,
exactly as production starts them, with `core.settings` (not the test settings).
"""
from __future__ import annotations

import http.server
import json
import os
import pwd
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[2]
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
FINAL = {"SUCCESS", "FAILURE", "REVOKED"}
# Variables the pytest process sets for its own (shared-server) run; a private stack must not
# inherit them.
_INHERITED_BLOCKLIST = (
    "DATABASE_URL", "POSTGRES_HOST", "CELERY_BROKER_URL", "CACHE_URL", "CELERY_BROKER_KEY_PREFIX",
    "DJANGO_SETTINGS_MODULE", "CELERY_RESULT_BACKEND", "DATA_DIR", "PORT", "HOST",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.1, what: str = "") -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    error: Exception | None = None
    while True:
        try:
            value = predicate()
        except Exception as exc:  # noqa: BLE001 (what is polled may be down on purpose)
            value, error = None, exc
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what or predicate} (last error: {error!r})"
            )
        time.sleep(interval)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- Redis ------------------------------------------------------------------------------------


class RedisServer:
    """A redis-server on an ephemeral port; stop/start keep the port (and, with AOF, the data)."""

    def __init__(self, directory: Path, *, appendonly: bool = False) -> None:
        self.directory = directory
        self.port = free_port()
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            "redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
            "--appendonly", "yes" if self.appendonly else "no", "--dir", str(self.directory),
            "--logfile", str(self.directory / "redis.log"),
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.ping, timeout=20, what="redis")

    def ping(self) -> bool:
        import redis

        return bool(redis.Redis(port=self.port, socket_connect_timeout=0.5).ping())

    def stop(self) -> None:
        """Kill it outright (a crash, not a clean shutdown)."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


# --- PostgreSQL -------------------------------------------------------------------------------


def _as_postgres(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    """initdb and pg_ctl refuse to run as root: run them as the `postgres` user."""
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--", *args]
    return subprocess.run(args, check=True, capture_output=True, **kwargs)


class PostgresCluster:
    """A throwaway cluster (initdb) listening on 127.0.0.1 and an ephemeral port."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="jobapi-faults-pg-"))
        if os.geteuid() == 0:
            uid, gid = pwd.getpwnam("postgres")[2:4]
            os.chown(self.directory, uid, gid)
        self.data = self.directory / "data"
        self.log = self.directory / "postgres.log"
        self.port = free_port()

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        _as_postgres([str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                      "--no-sync", "-E", "UTF8", "--locale", "C"])

    def _ctl(self, *args: str) -> None:
        options = (f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                   "-c max_connections=200")
        _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                      "-o", options, "-w", "-t", "60", *args])

    def start(self) -> None:
        self._ctl("start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "stop")

    def restart(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "restart")

    def sql(self, statement: str, database: str = "postgres") -> list[tuple[Any, ...]]:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=database,
                                connect_timeout=5)
        conn.autocommit = True
        try:
            with conn.cursor() as cursor:
                cursor.execute(statement)
                return list(cursor.fetchall()) if cursor.description else []
        finally:
            conn.close()

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.directory, ignore_errors=True)


# --- The webhook receiver ---------------------------------------------------------------------


# A path of the receiver's that never answers in time: another client's, on the same host.
HANG_PATH = "/hang"
HANG_SECONDS = 30.0


@dataclass
class Received:
    webhook_id: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ReceiverServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        receiver = self.server.receiver
        if self.path.endswith(HANG_PATH):
            receiver.hang()
            self.close_connection = True
            return
        receiver.requests_started += 1
        delay = receiver.answer_delay_seconds
        if delay:
            time.sleep(delay)
        status = receiver.status_for(self.headers.get("webhook-id", ""))
        if 200 <= status < 300:
            receiver.record(Received(self.headers.get("webhook-id", ""), dict(self.headers), body,
                                     time.monotonic()))
        else:
            receiver.refused += 1
        reply = b"ok" if status < 300 else b"not now"
        # Headers and body in one write: with TCP_NODELAY no ~40 ms delayed-ACK stall.
        self.wfile.write(
            f"HTTP/1.1 {status} X\r\nContent-Length: {len(reply)}\r\nConnection: close\r\n\r\n".encode()
            + reply
        )
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ReceiverServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    receiver: WebhookReceiver

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, address


@dataclass
class WebhookReceiver:
    """Records every acknowledged delivery; `down()` closes the port (connection refused)."""

    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    refused: int = 0
    requests_started: int = 0
    answer_delay_seconds: float = 0.0
    # Answer this status (instead of 200) to the next N requests.
    fail_next: int = 0
    fail_status: int = 503
    # Requests to HANG_PATH being held now.
    hanging: int = 0
    _server: _ReceiverServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def up(self) -> None:
        server = _ReceiverServer(("127.0.0.1", self.port), _Handler)
        server.receiver = self
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def hang(self) -> None:
        with self._lock:
            self.hanging += 1
        time.sleep(HANG_SECONDS)
        with self._lock:
            self.hanging -= 1

    def status_for(self, webhook_id: str) -> int:
        with self._lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                return self.fail_status
        return 200

    def record(self, item: Received) -> None:
        with self._lock:
            self.received.append(item)

    def ids(self) -> list[str]:
        with self._lock:
            return [item.webhook_id for item in self.received]

    def for_job(self, job_id: str) -> list[Received]:
        with self._lock:
            return [item for item in self.received if job_id.encode() in item.body]


# --- The service ------------------------------------------------------------------------------


class Api:
    """HTTP client for one API key against the stack's gunicorn.

    The stack runs gunicorn with threads, which keeps a connection open for 2 s (`keepalive`)
    after its last response. A client that reuses it as gunicorn closes it gets no answer
    (RemoteDisconnected), so this one, like any client of a keep-alive server should, drops
    its idle connections sooner than the server does.
    """

    IDLE_SECONDS = 1.0

    def __init__(self, base_url: str, key: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {key}"
        self._last_answer = time.monotonic()

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self._request("POST", path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self._request("GET", path, **kwargs)

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        if time.monotonic() - self._last_answer > self.IDLE_SECONDS:
            self.session.close()  # its connection pools; the session opens new ones
        try:
            return self.session.request(method, self.base_url + path, **kwargs)
        finally:
            self._last_answer = time.monotonic()

    def submit(self, job_name: str, payload: dict[str, Any] | None = None, **body: Any) -> dict[str, Any]:
        response = self.post("/api/jobs/", json={"job_name": job_name, "payload": payload or {}, **body})
        assert response.status_code == 202, response.text
        return response.json()

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.get(f"/api/jobs/{job_id}/")
        assert response.status_code == 200, response.text
        return response.json()

    def deliveries(self, job_id: str) -> list[dict[str, Any]]:
        response = self.get(f"/api/jobs/{job_id}/deliveries/")
        assert response.status_code == 200, response.text
        return list(response.json()["results"])

    def wait(self, job_id: str, until: Callable[[dict[str, Any]], bool] | None = None,
             timeout: float = 60) -> dict[str, Any]:
        check = until or (lambda job: job["status"] in FINAL)

        def reached() -> dict[str, Any] | None:
            job = self.job(job_id)
            return job if check(job) else None

        return wait_for(reached, timeout=timeout, interval=0.05, what=f"job {job_id}")


class Stack:
    """The service on private servers. Start what a test needs; `close()` stops everything."""

    def __init__(self, *, pg: PostgresCluster, database: str, workdir: Path,
                 broker_url: str | None = None, env: dict[str, str] | None = None,
                 redis_appendonly: bool = False) -> None:
        self.pg = pg
        self.database = database
        self.workdir = workdir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        (workdir / "data").mkdir(parents=True, exist_ok=True)  # beat's schedule file lives here
        # The processes' temporary folder: what one killed leaves there (billiard's pymp-*
        # directory, a Celery worker's) goes with the stack's directory, not to /tmp.
        (workdir / "tmp").mkdir(exist_ok=True)
        self.redis = RedisServer(workdir / "redis", appendonly=redis_appendonly)
        self.redis.start()
        self.broker_url = broker_url or self.redis.url
        self.web_port = free_port()
        self.env = {k: v for k, v in os.environ.items() if k not in _INHERITED_BLOCKLIST}
        self.env.update({
            "DJANGO_SETTINGS_MODULE": "core.settings",
            "DATABASE_URL": pg.url(database),
            "CELERY_BROKER_URL": self.broker_url,
            "CACHE_URL": self.redis.url.replace("/0", "/1"),
            "SECRET_KEY": "faults-test-secret-key-not-for-production",
            "DATA_DIR": str(workdir / "data"),
            "BEAT_SCHEDULE_FILE": str(workdir / "data" / "celerybeat-schedule"),
            "VIRTUAL_ENV": str(Path(sys.executable).parent.parent),
            "HOST": "127.0.0.1",
            "PORT": str(self.web_port),
            "WEB_CONCURRENCY": "2",
            "WEB_THREADS": "4",
            "LOG_LEVEL": "WARNING",
            "JOB_DISPATCH_SWEEP_SECONDS": "1",
            "JOB_DISPATCH_GRACE_SECONDS": "1",
            "API_SUBMIT_RATE_PER_MINUTE": "0",
            "CELERY_BROKER_VISIBILITY_TIMEOUT_SECONDS": "10",
            # The receiver listens on loopback; retries every second or two, not over hours.
            "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
            "WEBHOOK_RETRY_SCHEDULE": "0,1,1,1,2,2,2,3,3,3",
            "WEBHOOK_DISPATCH_SECONDS": "1",
            "WEBHOOK_TIMEOUT_SECONDS": "3",
            "PYTHONUNBUFFERED": "1",
            "TMPDIR": str(workdir / "tmp"),
        })
        self.env.update(env or {})
        self.base_url = f"http://127.0.0.1:{self.web_port}"
        self._celery: Any = None
        # Workers are supervised as in production (compose `restart: unless-stopped`): one that
        # exits by itself is started again, and counted here.
        self.restarts: dict[str, int] = {}
        self._supervised: dict[str, dict[str, str]] = {}
        self._supervisor_stop = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, daemon=True)
        self._supervisor.start()

    def _supervise(self) -> None:
        while not self._supervisor_stop.wait(0.5):
            for name, env in list(self._supervised.items()):
                process = self.processes.get(name)
                if process is not None and process.poll() is not None and name in self._supervised:
                    self.restarts[name] = self.restarts.get(name, 0) + 1
                    self._spawn(name, ["scripts/worker"], env=env)

    # Processes

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = self.workdir / f"{name}.log"
        self.logs[name] = log
        with open(log, "ab") as out:
            process = subprocess.Popen(args, cwd=REPO, env={**self.env, **(env or {})},
                                       stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        self.processes[name] = process
        return process

    def manage(self, *args: str) -> str:
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=self.env,
                                capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def start_web(self) -> None:
        self._spawn("web", ["scripts/web"])
        wait_for(lambda: requests.get(self.base_url + "/healthz", timeout=1).ok, timeout=60,
                 what="gunicorn")

    def start_worker(self, name: str = "jobs", *, queues: str = "jobs,jobs_long,webhooks,maintenance",
                     concurrency: int = 2, wait: bool = True, pool: str = "prefork") -> subprocess.Popen[bytes]:
        """scripts/worker with `concurrency` processes (prefork) or threads (pool="threads")."""
        # scripts/worker names the worker "$WORKER_NAME@<host>".
        prefix = f"{name}-{uuid.uuid4().hex[:6]}"
        env = {"QUEUES": queues, "WORKER_CONCURRENCY": str(concurrency), "WORKER_NAME": prefix,
               "WORKER_POOL": pool, "WORKER_THREADS": str(concurrency)}
        process = self._spawn(name, ["scripts/worker"], env=env)
        process.hostname_prefix = prefix + "@"  # type: ignore[attr-defined]
        self._supervised[name] = env
        if wait:
            self.wait_worker_ready(name)
        return process

    def wait_worker_ready(self, name: str) -> None:
        process = self.processes[name]
        prefix = process.hostname_prefix  # type: ignore[attr-defined]

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"worker {name} exited:\n{_tail(self.logs[name])}")
            replies = self.ping()
            return any(host.startswith(prefix) for reply in replies for host in reply)

        wait_for(ready, timeout=60, what=f"worker {name}")

    def start_beat(self) -> None:
        self._spawn("beat", ["scripts/beat"])

    def start_service(self, *, jobs: int = 1, deliveries: int = 1) -> None:
        """The deployment's shape: the API, a `jobs` worker (processes), a `deliveries` worker on
        the `webhooks` and `maintenance` queues (`deliveries` threads, as compose runs it), and
        beat (the sweeper and the webhook dispatcher)."""
        self.start_web()
        self.start_worker("jobs", queues="jobs,jobs_long", concurrency=jobs)
        self.start_worker("deliveries", queues="webhooks,maintenance", concurrency=deliveries, pool="threads")
        self.start_beat()

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill a process for good: a killed worker is not restarted (the test starts another)."""
        self._supervised.pop(name, None)
        process = self.processes[name]
        if process.poll() is None:
            os.kill(process.pid, sig)
            process.wait(timeout=30)

    def pool_children(self, name: str) -> list[int]:
        """PIDs of a worker's pool processes (children of the main process)."""
        pid = self.processes[name].pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return [int(child) for child in children]

    def stop_process(self, name: str, timeout: float = 20) -> None:
        self._supervised.pop(name, None)
        process = self.processes.pop(name, None)
        if process is None:
            return
        # Each process leads its own session: signal the group so pool children go too (even
        # when the main process was SIGKILLed and left them orphaned).
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()

    def ping(self) -> list[dict[str, Any]]:
        """Ping the stack's workers through its broker. Read/write URLs are set because Celery
        prefers this (pytest) process's CELERY_BROKER_URL over an app's `broker_url`."""
        if self._celery is None:
            from celery import Celery

            self._celery = Celery("faults-control", set_as_current=False)
            self._celery.conf.accept_content = ["json"]
            self._celery.conf.broker_read_url = self.broker_url
            self._celery.conf.broker_write_url = self.broker_url
        return list(self._celery.control.ping(timeout=1))

    # Data

    def client(self, name: str | None = None) -> Api:
        out = self.manage("create_api_key", name or f"faults-{uuid.uuid4().hex[:8]}", "--json")
        return Api(self.base_url, json.loads(out)["key"])

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        return self.pg.sql(statement, database=self.database)

    def close(self) -> None:
        self._supervised.clear()
        self._supervisor_stop.set()
        self._supervisor.join(timeout=5)
        for name in list(self.processes):
            self.stop_process(name, timeout=10)
        if self._celery is not None:
            self._celery.close()
        self.redis.stop()

    def log_tails(self) -> str:
        return "\n".join(f"--- {name} ---\n{_tail(path)}" for name, path in self.logs.items())
