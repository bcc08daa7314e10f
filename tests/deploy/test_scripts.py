"""The scripts the containers run, run here outside Docker against PostgreSQL and Redis.

docker-compose.yaml starts every service with one of these scripts and the image's environment;
these tests start them the same way (the production settings module, a port from PORT, queues
from QUEUES) with this run's database and a Redis key prefix of their own, so no other worker
of the test run can take their messages.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import redis
import requests
from celery import Celery
from django.conf import settings

from core.services import api_key_create, client_create
from tests.conftest import REPO, free_port, stop_process, worker_env
from tests.console.test_metrics import parse, value

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SCRIPTS = REPO / "scripts"
STARTUP_SECONDS = 90
# The public name, as in .env.example's ALLOWED_HOSTS; the proxy passes it on in Host.
PUBLIC_HOST = "api.example.com"
# A request from inside the network (an orchestrator's probe), over plain HTTP.
PLAIN = {"Host": PUBLIC_HOST}
# A request as the TLS-terminating proxy forwards it.
VIA_PROXY = {"Host": PUBLIC_HOST, "X-Forwarded-Proto": "https"}


def script_env(prefix: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """This run's database and broker, with the production settings module the image uses."""
    env = worker_env()
    del env["DJANGO_SETTINGS_MODULE"]
    env.update(
        CELERY_BROKER_KEY_PREFIX=prefix,
        DATA_DIR=str(data_dir),
        # The scripts run the venv's executables, as the image's VIRTUAL_ENV=/opt/venv does.
        VIRTUAL_ENV=sys.prefix,
        LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return env


def start(script: str, env: dict[str, str], log_dir: Path) -> subprocess.Popen[bytes]:
    with open(log_dir / f"{script}-{uuid.uuid4().hex[:6]}.log", "wb") as log:
        return subprocess.Popen([str(SCRIPTS / script)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def probe_app(prefix: str) -> Celery:
    """A Celery client that sees only the queues and workers under `prefix`."""
    # Not the current app: shared tasks called later in this run must keep using core.celery's.
    app = Celery("deploy-probe", broker=settings.CELERY_BROKER_URL, set_as_current=False)
    app.conf.broker_transport_options = {"global_keyprefix": prefix}
    return app


def wait_for_worker(app: Celery, name: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while not app.control.ping(destination=[name], timeout=0.5):
        assert process.poll() is None, f"worker {name} exited with {process.returncode}"
        assert time.monotonic() < deadline, f"worker {name} did not answer"


def wait_for_http(url: str, process: subprocess.Popen[bytes], **kwargs: Any) -> requests.Response:
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        assert process.poll() is None, f"server exited with {process.returncode}"
        try:
            return requests.get(url, timeout=10, **kwargs)
        except (requests.ConnectionError, requests.Timeout):  # not listening, or still loading
            assert time.monotonic() < deadline, f"{url} did not come up"
            time.sleep(0.1)


def run_script(script: str, env: dict[str, str], *, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPTS / script)], cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=timeout
    )


def purge(prefix: str) -> None:
    r = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    keys = list(r.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        r.delete(*keys)


@dataclass
class Stack:
    """scripts/web (HTTPS enforced, as .env.example sets it) and the two compose workers."""

    base_url: str
    env: dict[str, str]
    app: Celery
    jobs_worker: str
    deliveries_worker: str
    jobs_worker_metrics: str


@pytest.fixture(scope="module")
def stack(django_db_setup: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prefix = f"test-{os.environ['TEST_RUN_ID']}-deploy-{uuid.uuid4().hex[:8]}:"
    tmp = tmp_path_factory.mktemp("stack")
    port = free_port()
    env = script_env(
        prefix, tmp / "data",
        HOST="127.0.0.1", PORT=str(port), WEB_CONCURRENCY="2", ALLOWED_HOSTS=PUBLIC_HOST,
        SECURE_SSL_REDIRECT="true", SECURE_HSTS_SECONDS="3600",
        METRICS_ENABLED="true", METRICS_TOKEN="deploy-token", METRICS_DIR=str(tmp / "metrics"),
    )
    # Metrics as compose has them: no directory given, each script makes its group's under
    # METRICS_DIR (the image's /dev/shm/jobapi-metrics, one per container; here this stack's own).
    # Unset, not empty: prometheus-client takes an empty one for the current directory.
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    metrics_port = free_port()
    jobs_worker, deliveries_worker = (f"{queue}-{uuid.uuid4().hex[:6]}" for queue in ("jobs", "webhooks"))
    app = probe_app(prefix)
    processes = [
        start("web", env, tmp),
        start("worker", {**env, "QUEUES": "jobs", "WORKER_NAME": jobs_worker, "METRICS_PORT": str(metrics_port)}, tmp),
        # The deliveries worker as compose runs it: a pool of threads.
        start("worker", {**env, "QUEUES": "webhooks,maintenance", "WORKER_NAME": deliveries_worker,
                         "WORKER_POOL": "threads", "WORKER_THREADS": "4"}, tmp),
    ]
    host = socket.gethostname()
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", processes[0], headers=PLAIN)
        wait_for_worker(app, f"{jobs_worker}@{host}", processes[1])
        wait_for_worker(app, f"{deliveries_worker}@{host}", processes[2])
        yield Stack(f"http://127.0.0.1:{port}", env, app, f"{jobs_worker}@{host}", f"{deliveries_worker}@{host}",
                    f"http://127.0.0.1:{metrics_port}/metrics")
    finally:
        for process in processes:  # all at once: each waits for its children to exit
            process.terminate()
        for process in processes:
            stop_process(process)
        app.close()
        purge(prefix)




def test_health_checks_answer_over_plain_http_despite_the_https_redirect(stack: Stack) -> None:
    assert requests.get(f"{stack.base_url}/healthz", headers=PLAIN, timeout=10).status_code == 200
    ready = requests.get(f"{stack.base_url}/readyz", headers=PLAIN, timeout=10)
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_plain_http_to_the_api_is_redirected_to_https(stack: Stack) -> None:
    response = requests.get(f"{stack.base_url}/api/jobs/", headers=PLAIN, allow_redirects=False, timeout=10)

    assert response.status_code == 301
    assert response.headers["Location"] == f"https://{PUBLIC_HOST}/api/jobs/"


def test_a_job_submitted_through_the_proxy_runs_to_success(stack: Stack, transactional_db: Any) -> None:
    # Given a client with a key, and the web and jobs worker scripts running
    key = api_key_create(client=client_create(name=f"deploy-{uuid.uuid4().hex[:6]}"))
    headers = {"Authorization": f"Bearer {key}", **VIA_PROXY}

    # When a job is submitted over the proxy
    response = requests.post(
        f"{stack.base_url}/api/jobs/", headers=headers, timeout=10,
        json={"job_name": "api.tasks.hello_world", "payload": {"message": "deployed"}},
    )

    # Then it is accepted over HTTPS (with HSTS) and the worker runs it to the end
    assert response.status_code == 202, response.text
    assert response.headers["Strict-Transport-Security"] == "max-age=3600"
    job_url = f"{stack.base_url}/api/jobs/{response.json()['id']}/"
    deadline = time.monotonic() + 60
    while (job := requests.get(job_url, headers=headers, timeout=10).json())["status"] != "SUCCESS":
        assert job["status"] in {"PENDING", "STARTED"} and time.monotonic() < deadline, job
        time.sleep(0.1)
    assert job["result"] == "hello world deployed"


def test_the_workers_consume_the_queues_compose_gives_them(stack: Stack) -> None:
    queues = stack.app.control.inspect(
        destination=[stack.jobs_worker, stack.deliveries_worker], timeout=5
    ).active_queues()

    assert {name: sorted(q["name"] for q in qs) for name, qs in queues.items()} == {
        stack.jobs_worker: ["jobs"],
        stack.deliveries_worker: ["maintenance", "webhooks"],
    }


def test_metrics_are_served_by_the_api_with_its_token_and_by_each_worker_on_its_port(
    stack: Stack, transactional_db: Any
) -> None:
    # Given a job run by the jobs worker
    key = api_key_create(client=client_create(name=f"deploy-{uuid.uuid4().hex[:6]}"))
    headers = {"Authorization": f"Bearer {key}", **VIA_PROXY}
    job = requests.post(f"{stack.base_url}/api/jobs/", headers=headers, timeout=10,
                        json={"job_name": "api.tasks.hello_world", "payload": {}}).json()
    deadline = time.monotonic() + 60
    while requests.get(f"{stack.base_url}/api/jobs/{job['id']}/", headers=headers, timeout=10).json()["status"] != "SUCCESS":
        assert time.monotonic() < deadline
        time.sleep(0.1)

    # When Prometheus scrapes the API (plain HTTP inside the network) and the worker
    api = requests.get(f"{stack.base_url}/metrics", timeout=10,
                       headers={**PLAIN, "Authorization": "Bearer deploy-token"}, allow_redirects=False)
    refused = requests.get(f"{stack.base_url}/metrics", headers=PLAIN, timeout=10, allow_redirects=False)
    worker = requests.get(stack.jobs_worker_metrics, timeout=10)

    # Then the API counted the submission, the worker the job's run; each group its own
    assert api.status_code == 200 and refused.status_code == 401
    hello = {"job_name": "api.tasks.hello_world"}
    assert value(parse(api.text), "jobapi_jobs_submitted_total", **hello) >= 1
    assert value(parse(worker.text), "jobapi_jobs_finished_total", status="SUCCESS", **hello) >= 1
    assert "jobapi_jobs_submitted_total" in worker.text and "jobapi_ready" not in worker.text
    assert {p.name for p in Path(stack.env["METRICS_DIR"]).iterdir()} == {
        "web", f"worker-{stack.jobs_worker.split('@')[0]}", f"worker-{stack.deliveries_worker.split('@')[0]}"}


@pytest.mark.parametrize("switch", ["True", "1", "yes"])
def test_metrics_switched_on_in_any_of_the_settings_words_are_served(
    switch: str, transactional_db: Any, tmp_path: Path
) -> None:
    """The settings take METRICS_ENABLED=True, =1 or =yes as on, and so must the scripts that
    make the metrics directory: seeing only "true", they left the API serving GET /metrics as
    a 500 (and Prometheus's api target down: ReadyzFailing) and the workers serving nothing."""
    # Given the API and a jobs worker started by their scripts with metrics switched on so
    prefix = f"test-{os.environ['TEST_RUN_ID']}-switch-{uuid.uuid4().hex[:8]}:"
    port, metrics_port = free_port(), free_port()
    name = f"jobs-{uuid.uuid4().hex[:6]}"
    env = script_env(prefix, tmp_path / "data", HOST="127.0.0.1", PORT=str(port), WEB_CONCURRENCY="1",
                     ALLOWED_HOSTS=PUBLIC_HOST, METRICS_ENABLED=switch, METRICS_TOKEN="switch-token",
                     METRICS_DIR=str(tmp_path / "metrics"))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # as compose runs them: each script makes its own
    app = probe_app(prefix)
    web = start("web", env, tmp_path)
    worker = start("worker", {**env, "QUEUES": "jobs", "WORKER_NAME": name, "METRICS_PORT": str(metrics_port)},
                   tmp_path)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", web, headers=PLAIN)
        wait_for_worker(app, f"{name}@{socket.gethostname()}", worker)

        # When Prometheus scrapes each of them
        api = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10,
                           headers={**PLAIN, "Authorization": "Bearer switch-token"})
        served = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)  # served once it is ready

        # Then both answer with their figures
        assert api.status_code == 200, api.text[:300]
        assert "jobapi_ready 1.0" in api.text
        assert "jobapi_jobs_submitted_total" in api.text
        assert served.status_code == 200 and "jobapi_jobs_finished_total" in served.text
    finally:
        web.terminate()
        worker.terminate()
        stop_process(web)
        stop_process(worker)
        app.close()
        purge(prefix)


def run_healthcheck(check: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / "healthcheck"), check],
        cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=60,
    )


def test_the_container_health_checks_pass_against_running_services(stack: Stack) -> None:
    # As in the container: ALLOWED_HOSTS from .env, HOST and PORT as the web service has them.
    web = run_healthcheck("web", stack.env)
    worker = run_healthcheck("worker", {**stack.env, "WORKER_NAME": stack.jobs_worker.split("@")[0]})

    assert web.returncode == 0, web.stderr
    assert worker.returncode == 0, worker.stderr


def test_the_container_health_checks_fail_when_nothing_answers(stack: Stack) -> None:
    web = run_healthcheck("web", {**stack.env, "PORT": str(free_port())})
    worker = run_healthcheck("worker", {**stack.env, "WORKER_NAME": "nobody"})

    assert web.returncode == 1
    assert worker.returncode == 1
    assert "did not answer" in worker.stderr


def test_a_probe_naming_another_host_is_refused(stack: Stack) -> None:
    """Why the health check sends a Host from ALLOWED_HOSTS: Django refuses any other."""
    response = requests.get(f"{stack.base_url}/healthz", timeout=10)

    assert response.status_code == 400


@pytest.mark.django_db
def test_beat_script_publishes_the_periodic_tasks(tmp_path: Path) -> None:
    # Given beat alone (no worker) on a prefix of its own
    prefix = f"test-{os.environ['TEST_RUN_ID']}-beat-{uuid.uuid4().hex[:8]}:"
    schedule = tmp_path / "beat-schedule"
    env = script_env(prefix, tmp_path / "data", BEAT_SCHEDULE_FILE=str(schedule), JOB_DISPATCH_SWEEP_SECONDS="1")
    beat = start("beat", env, tmp_path)
    r = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    try:
        # Then the dispatch sweep lands on the maintenance queue, and beat keeps its schedule file
        deadline = time.monotonic() + STARTUP_SECONDS
        while not any(b'"jobs.dispatch_sweep"' in message for message in r.lrange(f"{prefix}maintenance", 0, -1)):
            assert beat.poll() is None, f"beat exited with {beat.returncode}"
            assert time.monotonic() < deadline, "beat published no dispatch sweep"
            time.sleep(0.2)
        assert list(tmp_path.glob("beat-schedule*"))
    finally:
        stop_process(beat)
        purge(prefix)


@pytest.mark.django_db
def test_beat_at_info_logs_no_line_per_periodic_task_it_sends(tmp_path: Path) -> None:
    # Given beat alone at LOG_LEVEL=INFO (where an operator looks for a line per request, job
    # transition and delivery attempt), its sweep due every second
    prefix = f"test-{os.environ['TEST_RUN_ID']}-beat-{uuid.uuid4().hex[:8]}:"
    env = script_env(prefix, tmp_path / "data", BEAT_SCHEDULE_FILE=str(tmp_path / "beat-schedule"),
                     JOB_DISPATCH_SWEEP_SECONDS="1", LOG_LEVEL="INFO")
    beat = start("beat", env, tmp_path)
    r = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    try:
        # When it has sent the sweep three times
        deadline = time.monotonic() + STARTUP_SECONDS
        while sum(b'"jobs.dispatch_sweep"' in message for message in r.lrange(f"{prefix}maintenance", 0, -1)) < 3:
            assert beat.poll() is None, f"beat exited with {beat.returncode}"
            assert time.monotonic() < deadline, "beat published no dispatch sweep"
            time.sleep(0.2)
    finally:
        stop_process(beat)
        purge(prefix)

    # Then its log has its start, and no line for each task sent: Celery's "Scheduler: Sending due
    # task" came for each of the four tasks due every 5 s, some 70,000 lines a day, idle or not
    [log_path] = tmp_path.glob("beat-*.log")
    log = log_path.read_text()
    assert "beat: Starting..." in log, log
    assert "Sending due task" not in log, log


def test_migrate_script_builds_an_empty_database_and_can_run_again(django_db_setup: Any, tmp_path: Path) -> None:
    # Given an empty database on the test server
    db = settings.DATABASES["default"]
    name = f"test_jobapi_{os.environ['TEST_RUN_ID']}_migrate"
    admin = psycopg2.connect(
        dbname="postgres", user=db["USER"], password=db["PASSWORD"], host=db["HOST"] or "127.0.0.1",
        port=db["PORT"] or 5432,
    )
    admin.autocommit = True
    url = f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{name}"
    env = script_env("unused:", tmp_path / "data", DATABASE_URL=url)
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cursor.execute(f'CREATE DATABASE "{name}"')

        # When the compose migrate service's script runs, twice (as on every `docker compose up`)
        first = run_script("migrate", env, timeout=150)
        again = run_script("migrate", env, timeout=150)

        # Then every app's tables exist, and the second run had nothing to do
        assert first.returncode == 0, first.stderr
        assert again.returncode == 0, again.stderr
        assert "No migrations to apply" in again.stdout
        conn = psycopg2.connect(url)
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT DISTINCT app FROM django_migrations")
                assert {"core", "jobs", "webhooks"} <= {row[0] for row in cursor.fetchall()}
        finally:
            conn.close()
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_flower_script_refuses_to_start_without_a_login(django_db_setup: Any, tmp_path: Path) -> None:
    env = script_env("unused:", tmp_path / "data")
    env.pop("FLOWER_BASIC_AUTH", None)

    result = run_script("flower", env, timeout=30)

    assert result.returncode != 0
    assert "FLOWER_BASIC_AUTH" in result.stderr


def test_flower_script_serves_the_monitor_behind_its_login(django_db_setup: Any, tmp_path: Path) -> None:
    prefix = f"test-{os.environ['TEST_RUN_ID']}-flower-{uuid.uuid4().hex[:8]}:"
    port = free_port()
    env = script_env(prefix, tmp_path / "data", FLOWER_PORT=str(port), FLOWER_BASIC_AUTH="ops:s3cret-for-tests")
    flower = start("flower", env, tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_for_http(f"{base}/healthcheck", flower).text == "OK"
        assert requests.get(f"{base}/workers", timeout=10).status_code == 401
        assert requests.get(f"{base}/workers", auth=("ops", "s3cret-for-tests"), timeout=10).status_code == 200
    finally:
        stop_process(flower)
        purge(prefix)
