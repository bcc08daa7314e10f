"""Shared fixtures: one real Celery worker for the whole session, a live HTTP server, API clients.

The worker is a subprocess started after pytest-django created the test database, pointed at
that database and at this run's own Redis key prefix, so end-to-end tests see committed data
exactly as production would (no eager Celery, no mocked database).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from celery.signals import before_task_publish
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, OperationalError, connection, transaction
from django.db.backends.signals import connection_created
from django.db.models import Model
from django.http import HttpResponse
from django.test import Client as HttpClient
from django.test.utils import setup_databases, teardown_databases

from console import counted
from core import concurrency, pause
from core.celery import app as celery_app
from core.db import DEADLOCK_DETECTED, sqlstate
from core.models import Client
from core.pause import PauseAfterFailure
from core.services import api_key_create, client_create
from tests.fakes.openai_server import FAKE_API_KEY, FakeOpenAI

REPO = Path(__file__).resolve().parent.parent
FINAL = {"SUCCESS", "FAILURE", "REVOKED"}
# Every job transition now writes two tables (the job, its event log), so the worker meets the
# flush's table locks a little more often than it used to: a few more tries.
FLUSH_ATTEMPTS = 6
# The `served` gunicorn's threads, and the name its database connections carry (PGAPPNAME).
SERVED_THREADS = 210
SERVED_APP_NAME = f"served-{uuid.uuid4().hex[:8]}"
# The session worker's and beat's directory (celery_logs), for the summary of a run that failed.
CELERY_LOGS = pytest.StashKey[Path]()
# The admin's login form, and the proxy its tests post it through (FORWARDED_ALLOW_IPS's default:
# a proxy on the same host).
ADMIN_LOGIN = "/admin/login/?next=/admin/"
PROXY = "127.0.0.1"


def _require_services() -> None:
    """On CI a missing PostgreSQL or Redis fails the run; it never silently skips."""
    import redis

    try:
        redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_connect_timeout=2).ping()
    except Exception as exc:
        pytest.exit(f"Redis is not reachable at {settings.CELERY_BROKER_URL}: {exc}", returncode=3)


def worker_env(**extra: str) -> dict[str, str]:
    """Environment for a subprocess that must share this run's database and queues."""
    env = dict(os.environ)
    db = connection.settings_dict
    env["DATABASE_URL"] = (
        f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
        f"/{db['NAME']}"
    )
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    env["DB_CONN_MAX_AGE"] = "600"
    env.update(extra)
    return env


def fake_openai_env(server: FakeOpenAI) -> dict[str, str]:
    """Worker settings that point the checklist job at `server`, with millisecond backoff."""
    return {
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": FAKE_API_KEY,
        "OPENAI_MAX_ATTEMPTS": "3",
        "OPENAI_RETRY_BASE_SECONDS": "0.01",
        "OPENAI_RETRY_MAX_SECONDS": "2",
        "OPENAI_TIMEOUT_SECONDS": "10",
        # Off in the session worker: its tests' failures in a row (one job's three 500s, then
        # another's) would open it for the tests after them. tests/jobs/test_model_breaker.py
        # turns it on in a worker of its own.
        "OPENAI_BREAKER_FAILURES": "0",
    }


def worker_log_lines(log: Path, message: str, about: str) -> list[dict[str, str]]:
    """The lines of a worker's `log` (`celery_worker_log`: WARNING and up, as text) saying
    `message` that hold `about` (`job_id=...`), as {field: value} with their `level` (its text
    format: `<time> [<level>] <message> [<logger>] key=value...`, a value with spaces quoted)."""
    found = []
    for line in log.read_text().splitlines():
        if message in line and about in line:
            fields = dict(word.split("=", 1) for word in shlex.split(line) if "=" in word)
            found.append({**fields, "level": line.split("[", 1)[1].split("]", 1)[0].strip()})
    return found


def start_worker(
    *, log_dir: Path, queues: str = "jobs,jobs_long,webhooks,maintenance", concurrency: int = 4,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """A worker on this run's queues, and its name; its log (WARNING and up, as text) is
    `log_dir/<name>.log`."""
    name = f"test-{uuid.uuid4().hex[:8]}@localhost"
    log = open(log_dir / f"{name}.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "core", "worker", "-Q", queues,
         "-c", str(concurrency), "-n", name, "--without-mingle", "--without-gossip",
         "-l", "warning"],
        cwd=REPO,
        env=env or worker_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Celery worker exited early; see {log.name}")
        if celery_app.control.ping(destination=[name], timeout=0.5):
            return process, name
    process.kill()
    raise RuntimeError(f"Celery worker did not come up; see {log.name}")


def random_address() -> str:
    """A client address of the calling test's own: the counts of failed logins and key checks
    live in Redis for minutes to an hour, across tests and runs."""
    return f"198.18.{random.randrange(256)}.{random.randrange(1, 255)}"


def admin_login(
    username: str, password: str, *, browser: HttpClient | None = None, peer: str = PROXY,
    forwarded_for: str | None = None,
) -> HttpResponse:
    """One POST of the admin's login form, in `browser` (a new one unless given), from `peer`
    with X-Forwarded-For when given."""
    headers = {"REMOTE_ADDR": peer}
    if forwarded_for is not None:
        headers["HTTP_X_FORWARDED_FOR"] = forwarded_for
    return (browser or HttpClient()).post(ADMIN_LOGIN, {"username": username, "password": password}, **headers)


def signed_in_browser(username: str, password: str) -> HttpClient:
    """A browser signed in to the admin as `username`, through the proxy from an address of its own."""
    browser = HttpClient(REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=random_address())
    assert browser.post(ADMIN_LOGIN, {"username": username, "password": password}).status_code == 302
    return browser


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def script_output(script: str, *, database_url: str, data_dir: Path) -> str:
    """The last line `script` prints, run by a fresh Python in this checkout with the service's own
    settings (not the tests') on `database_url`: as `make run`, or a deployment, would have it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CELERY_"))}
    env.update(DATABASE_URL=database_url, DATA_DIR=str(data_dir), DJANGO_SETTINGS_MODULE="core.settings",
               SECRET_KEY="x")
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def updates_refused(row: Model, *, name: str = "test_row_refused") -> None:
    """PostgreSQL refuses every update of `row` (a trigger and its function, both `name`; gone with
    the test's transaction, else dropped by updates_refused_dropped): its write raises."""
    with connection.cursor() as cursor:
        cursor.execute(f"""
            CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'this row is refused (the test)'; END $$""")
        cursor.execute(f"CREATE TRIGGER {name} BEFORE UPDATE ON {row._meta.db_table} FOR EACH ROW "
                       f"WHEN (OLD.{row._meta.pk.column} = '{row.pk}') EXECUTE FUNCTION {name}()")


def updates_refused_dropped(row_type: type[Model], *, name: str = "test_row_refused") -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TRIGGER IF EXISTS {name} ON {row_type._meta.db_table}; DROP FUNCTION IF EXISTS {name}()")


def plan_of(sql: str, *, analyze: bool = False, seqscan: bool = True) -> str:
    """PostgreSQL's plan for `sql` (a statement captured from the code), run too with `analyze`;
    with `seqscan` False, as it plans where a table is big enough to prefer an index."""
    with transaction.atomic(), connection.cursor() as cursor:
        if not seqscan:
            cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {'(ANALYZE) ' if analyze else ''}{sql}")
        return "\n".join(row[0] for row in cursor.fetchall())


def plan_rows_read(plan: str, table: str) -> int:
    """The rows an EXPLAIN ANALYZE `plan`'s scans of `table` read, kept or dropped, over all
    their loops."""
    node = re.compile(rf" on {table} .*actual time=\S+ rows=(\d+) loops=(\d+)")
    removed = re.compile(r"Rows Removed by (?:Filter|Index Recheck): (\d+)")
    read, loops = 0, 0
    for line in plan.splitlines():
        if found := node.search(line):
            loops = int(found[2])
            read += int(found[1]) * loops
        elif "->" in line:
            loops = 0
        elif loops and (dropped := removed.search(line)):
            read += int(dropped[1]) * loops
    return read


@contextlib.contextmanager
def every_connection_wrapped(wrapper: Callable[..., Any]) -> Iterator[None]:
    """Django's execute `wrapper` on every database connection made meanwhile: the live server's
    requests run in threads of their own, each connecting to PostgreSQL (again after each
    request), so each connection gets it as it connects, once however often it reconnects."""
    with contextlib.ExitStack() as wrappers:
        def wrap(sender: Any, connection: Any, **kwargs: Any) -> None:
            if wrapper not in connection.execute_wrappers:
                wrappers.enter_context(connection.execute_wrapper(wrapper))

        connection_created.connect(wrap)
        try:
            yield
        finally:
            connection_created.disconnect(wrap)


def wait_until_up(url: str, process: subprocess.Popen[bytes], log_path: Path, *, timeout: float = 60) -> None:
    """Until `url` answers 200 (a server starting: not listening yet, or still loading the app);
    raises with the server's log if it exits first or never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout:.0f} s:\n{log_path.read_text()}")


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(autouse=True)
def operator_counts_made_anew() -> Iterator[None]:
    """Each test's console and /metrics count its own rows (jobs by status, the deliveries
    pending, held and failing): a count this process made in a test before serves its reads for
    COUNTED_FOR_SECONDS (console/counted.py)."""
    counted.forget_all()
    yield


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[FakeOpenAI]:
    """A local Chat Completions server for the whole session; the worker's model calls go to it,
    and the live server (in this process) sees the checklist job as available."""
    with FakeOpenAI() as server:
        saved = settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY
        settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = server.base_url, FAKE_API_KEY
        yield server
        settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = saved


def start_beat(env: dict[str, str], directory: Path) -> subprocess.Popen[bytes]:
    """Celery beat: the periodic tasks (the sweeper publishing scheduled and waiting jobs, the
    deadlines, the webhook dispatcher), on this run's queues, its schedule and log in
    `directory`."""
    log = open(directory / "beat.log", "wb")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "core", "beat", "-s", str(directory / "schedule"), "-l", "warning"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: Any, django_db_blocker: Any) -> Iterator[None]:
    """The suite's test database, whichever tests run. pytest-django makes it only when a test of
    the run asks for `db` (or its mark): a run of tests that ask for this alone (the session
    worker's, tests/deploy/test_scripts.py's servers) pointed them at DATABASE_URL's own database,
    `jobapi`: missing (their /readyz a 503), or a developer's, which they wrote to."""
    if connection.settings_dict["NAME"] == connection.settings_dict["TEST"]["NAME"]:
        yield
        return
    with django_db_blocker.unblock():
        made = setup_databases(verbosity=0, interactive=False, aliases={DEFAULT_DB_ALIAS})
    yield
    with django_db_blocker.unblock():
        teardown_databases(made, verbosity=0)


@pytest.fixture(scope="session")
def celery_logs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session worker's and beat's directory (their logs, beat's schedule), in pytest's
    temporary directory of the run: pytest removes it after a run that passed and keeps it after
    one that failed (pytest.ini's tmp_path_retention_policy), whose summary names it."""
    directory = tmp_path_factory.mktemp("celery", numbered=False)
    request.config.stash[CELERY_LOGS] = directory
    return directory


@pytest.fixture(scope="session")
def celery_worker(
    django_db_setup: Any, django_db_blocker: Any, fake_openai: FakeOpenAI, celery_logs: Path
) -> Iterator[str]:
    """One worker for the whole session, consuming every queue, and beat beside it."""
    _require_services()
    with django_db_blocker.unblock():
        env = worker_env(**fake_openai_env(fake_openai))
        process, name = start_worker(env=env, log_dir=celery_logs)
        beat = start_beat(env, celery_logs)
    with _flush_retried_after_a_deadlock():
        yield name
    stop_process(beat)
    stop_process(process)
    _purge_run_keys()


@pytest.fixture(scope="session")
def celery_worker_log(celery_worker: str, celery_logs: Path) -> Path:
    """The session worker's log, which worker_log_lines reads."""
    return celery_logs / f"{celery_worker}.log"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """After a run that failed, where the session worker's and beat's logs were kept."""
    directory = config.stash.get(CELERY_LOGS, None)
    if exitstatus != 0 and directory is not None and directory.is_dir():
        terminalreporter.write_sep("-", f"the session worker's and beat's logs: {directory}")


@pytest.fixture
def system_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The system's temporary folder (TMPDIR) of the processes a test starts: an empty one of the
    test's, removed after it, for a test asserting what they leave there. In the real one, not
    in tmp_path: a socket's path in it (Chromium's) must stay under 108 characters. This
    process's own (tempfile) stays where it is: the harness keeps its directories there."""
    with tempfile.TemporaryDirectory(prefix="jobapi-tmp-") as directory:
        monkeypatch.setenv("TMPDIR", directory)
        yield Path(directory)


@contextlib.contextmanager
def _flush_retried_after_a_deadlock() -> Iterator[None]:
    """A transactional test ends with a flush (TRUNCATE of every table), which can deadlock with
    a statement the worker runs at that moment for an earlier test (a retry due now, a job
    finishing): PostgreSQL then aborts one of the two. When that is the flush, run it again,
    as the worker's task would be (its transaction is over by then). On the backend's class, not
    on one connection's: a test serving requests on their turns' connections (core/concurrency.py)
    leaves the thread a new connection object."""
    ops_class = type(connection.ops)
    flush = ops_class.execute_sql_flush

    def execute_sql_flush(ops: Any, sql_list: list[str]) -> None:
        for attempt, attempts_left in enumerate(reversed(range(FLUSH_ATTEMPTS)), start=1):
            try:
                return flush(ops, sql_list)
            except OperationalError as exc:
                deadlock = sqlstate(exc) == DEADLOCK_DETECTED
                if not deadlock or not attempts_left:
                    raise
            # Longer each time, for a worker still running the test's jobs: tried again at once,
            # the flush met the next of its transitions, six times in a row on a loaded machine
            # (a batch of nine jobs, tests/jobs/test_job_control.py).
            time.sleep(0.25 * attempt)

    ops_class.execute_sql_flush = execute_sql_flush
    try:
        yield
    finally:
        del ops_class.execute_sql_flush  # the base class's again


def _purge_run_keys() -> None:
    import redis

    prefix = os.environ["CELERY_BROKER_KEY_PREFIX"]
    r = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    keys = list(r.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        r.delete(*keys)


class Api:
    """A tiny HTTP client bound to the live server and one API key."""

    def __init__(self, base_url: str, key: str | None, client: Client | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.client = client
        self.session = requests.Session()

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        headers.update(extra or {})
        return headers

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs["headers"] = self.headers(kwargs.get("headers"))
        kwargs.setdefault("timeout", 30)
        return self.session.request(method, self.base_url + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def submit(self, job_name: str, payload: dict[str, Any] | None = None, **body: Any) -> dict[str, Any]:
        response = self.post("/api/jobs/", json={"job_name": job_name, "payload": payload or {}, **body})
        assert response.status_code == 202, response.text
        return response.json()

    def wait(
        self, job_id: str, until: Callable[[dict[str, Any]], bool] | None = None, timeout: float = 30
    ) -> dict[str, Any]:
        """Poll the job until `until(job)` (default: a final status) or fail after `timeout`."""
        until = until or (lambda job: job["status"] in FINAL)
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(f"/api/jobs/{job_id}/").json()
            if until(job):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} did not get there in {timeout}s: {job}")
            time.sleep(0.05)


@pytest.fixture
def make_api(
    live_server: Any, transactional_db: Any, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Api]]:
    """Factory: an Api for a new client (with its own key)."""
    clients: list[Client] = []

    def factory(name: str | None = None) -> Api:
        client = client_create(name=name or f"client-{uuid.uuid4().hex[:8]}")
        clients.append(client)
        return Api(live_server.url, api_key_create(client=client), client)

    yield factory
    if "celery_worker" in request.fixturenames:
        # A test that ends right after a submission would have the database flushed while the
        # worker writes that job: give the clients' unfinished jobs a few seconds to end first,
        # so the flush rarely meets the worker (when it does deadlock with it, the flush runs
        # again: _flush_retried_after_a_deadlock, after PostgreSQL's one-second detection).
        from jobs.models import Job

        deadline = time.monotonic() + 5
        unfinished = Job.objects.filter(owner__in=clients, status__in=Job.ACTIVE_STATUSES)
        while unfinished.exists() and time.monotonic() < deadline:
            time.sleep(0.05)


@pytest.fixture
def api(make_api: Callable[..., Api], celery_worker: str) -> Api:
    """An authenticated client against the live server, with the shared worker running."""
    return make_api()


@pytest.fixture
def anonymous(live_server: Any, transactional_db: Any) -> Api:
    return Api(live_server.url, None)


@pytest.fixture
def limiter_redis_unreachable(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's rate limiter made again, against a Redis that refuses connections (down as
    the process starts)."""
    monkeypatch.setattr("core.throttling._limiter", None)
    monkeypatch.setattr("core.throttling._client", None)
    settings.CACHE_URL = "redis://127.0.0.1:1/0"


@pytest.fixture
def two_turns(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The live server runs two requests at once, as two API processes would (one by default)."""
    settings.WEB_ACTIVE_REQUESTS = 2
    monkeypatch.setattr(concurrency, "_turns", None)


@contextlib.contextmanager
def serving(api: Api, log_path: Path, **extra_env: str) -> Iterator[tuple[Api, subprocess.Popen[bytes]]]:
    """`api`'s client against gunicorn as production runs it (scripts/web: one process of
    SERVED_THREADS threads, database connections going with its request turns), and gunicorn's
    master process (a test may stop it)."""
    port = free_port()
    # PGAPPNAME (libpq) names its database connections, to count them.
    env = worker_env(PORT=str(port), WEB_CONCURRENCY="1", WEB_THREADS=str(SERVED_THREADS), DEBUG="false",
                     WEB_TURN_CONNECTIONS="true",
                     PGAPPNAME=SERVED_APP_NAME, **extra_env)
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(REPO / "scripts" / "web")], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/healthz", process, log_path)
        yield Api(url, api.key, api.client), process
    finally:
        stop_process(process)


@dataclasses.dataclass
class SilentServer:
    """A TCP address that takes connections and never answers (a hung Redis, broker or database),
    and the connections made to it so far."""

    address: str
    connections: list[socket.socket]


@contextlib.contextmanager
def silent_server() -> Iterator[SilentServer]:
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    server = SilentServer(f"127.0.0.1:{listener.getsockname()[1]}", [])

    def take_and_keep_quiet() -> None:
        while True:
            try:
                server.connections.append(listener.accept()[0])
            except OSError:  # closed: the test is over
                return

    threading.Thread(target=take_and_keep_quiet, daemon=True).start()
    try:
        yield server
    finally:
        listener.close()
        for held_connection in server.connections:
            held_connection.close()


@pytest.fixture
def queued_tasks() -> Iterator[list[str]]:
    """The names of the tasks this process sends to the broker, in order, as each is sent."""
    sent: list[str] = []

    def record(sender: str, **kwargs: Any) -> None:
        sent.append(sender)

    before_task_publish.connect(record, weak=False)
    yield sent
    before_task_publish.disconnect(record)


@pytest.fixture
def broker_down(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Point this process's Celery app at a port nothing listens on: a real refused connection.
    The publish it fails is forgotten afterwards, so later tests publish from the request."""
    monkeypatch.setattr(pause, "broker", PauseAfterFailure(pause.BROKER_RETRY_SECONDS))
    with broker_refusing():
        yield


@contextlib.contextmanager
def broker_refusing() -> Iterator[None]:
    """This process's Celery app pointed at a port nothing listens on (a real refused
    connection), then back at the test run's broker."""
    real_url = celery_app.conf.broker_write_url
    use_broker(f"redis://127.0.0.1:{free_port()}/0")
    try:
        yield
    finally:
        use_broker(real_url)


def use_broker(url: str) -> None:
    """Reconnect this process's Celery app to `url` (drops pooled connections and producers)."""
    # Fresh pools for the new URL; kombu keys its shared pools by connection, so the old ones
    # stay usable for whoever still holds them.
    celery_app._pool = None
    celery_app.amqp._producer_pool = None
    celery_app.conf.broker_write_url = url  # set from broker_url at configuration time


@pytest.fixture
def broker_hung(monkeypatch: pytest.MonkeyPatch) -> Iterator[SilentServer]:
    """Point this process's Celery app at a broker that takes connections and never answers."""
    monkeypatch.setattr(pause, "broker", PauseAfterFailure(pause.BROKER_RETRY_SECONDS))
    real_url = celery_app.conf.broker_write_url
    with silent_server() as hung:
        use_broker(f"redis://{hung.address}/0")
        try:
            yield hung
        finally:
            use_broker(real_url)


@pytest.fixture
def broker_hung_briefly(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[SilentServer]:
    """This process's looks at the broker (/readyz's, the console's) pointed at a broker that takes
    connections and never answers, its timeouts 0.5 s (CELERY_BROKER_CONNECTION_TIMEOUT under its
    2 s default: its connect and socket timeouts)."""
    settings.CELERY_BROKER_CONNECTION_TIMEOUT = 0.5
    options = {**celery_app.conf.broker_transport_options, "socket_connect_timeout": 0.5, "socket_timeout": 0.5}
    monkeypatch.setitem(celery_app.conf, "broker_transport_options", options)
    with silent_server() as broker:
        monkeypatch.setitem(celery_app.conf, "broker_write_url", f"redis://{broker.address}/0")
        monkeypatch.setitem(celery_app.conf, "broker_read_url", f"redis://{broker.address}/0")
        yield broker


@pytest.fixture
def served_env() -> dict[str, str]:
    """More settings for the `served` gunicorn; a test gives its own by parametrizing
    `served_env` (`@pytest.mark.parametrize("served_env", [{"WEB_BODY_READ_SECONDS": "1"}])`)."""
    return {}


@pytest.fixture
def served(api: Api, tmp_path: Path, served_env: dict[str, str]) -> Iterator[Api]:
    """`api`'s client against gunicorn as production runs it (`serving`) instead of the live server."""
    with serving(api, tmp_path / "gunicorn.log", **served_env) as (client, _):
        yield client
