"""LOG_FORMAT=json at INFO, through gunicorn and a Celery worker as production runs them: one JSON
object a line, and one grep for the request id follows a job from its POST to its webhook."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from celery import Celery
from django.conf import settings
from django.core.cache import cache

from core import logs
from core.services import api_key_create, client_create
from examples.receiver import Receiver
from tests.conftest import REPO, stop_process, worker_env
from tests.openapi.web import start_web, stop
from webhooks import outbox
from webhooks.models import Delivery

# Not in `make test-fast`: it boots a web server and a worker of its own.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

FIELDS = {"timestamp", "level", "logger", "message"}


def _lines(path: Path) -> list[dict[str, Any]]:
    """The log's JSON lines (gunicorn's own start lines and Celery's banner are not logging's)."""
    found = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


def _worker_start(env: dict[str, str], queues: str, name: str, prefix: str,
                  log_path: Path) -> tuple[subprocess.Popen[bytes], Celery]:
    """A Celery worker logging at INFO into `log_path`, and an app to reach it under `prefix`."""
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "core", "worker", "-Q", queues, "-c", "1",
             "-n", name, "--without-mingle", "--without-gossip", "-l", "INFO"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    app = Celery("logs-probe", broker=settings.CELERY_BROKER_URL, set_as_current=False)
    app.conf.broker_transport_options = {"global_keyprefix": prefix}
    return worker, app


def _wait_for_worker(app: Celery, name: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while not app.control.ping(destination=[name], timeout=0.5):
        assert process.poll() is None and time.monotonic() < deadline, f"worker {name} did not come up"


@contextlib.contextmanager
def _json_worker(tag: str, level: str, log_path: Path,
                 queues: str = "jobs") -> Iterator[tuple[str, Celery, subprocess.Popen[bytes]]]:
    """A worker of `queues` logging JSON at `level` into `log_path`, on broker keys of its own,
    once it answers: its name, an app to reach it and its process; stopped after."""
    prefix = f"test-{os.environ['TEST_RUN_ID']}-{tag}-{uuid.uuid4().hex[:8]}:"
    env = worker_env(CELERY_BROKER_KEY_PREFIX=prefix, LOG_FORMAT="json", LOG_LEVEL=level)
    name = f"{tag}-{uuid.uuid4().hex[:6]}@localhost"
    worker, app = _worker_start(env, queues, name, prefix, log_path)
    try:
        _wait_for_worker(app, name, worker)
        yield name, app, worker
    finally:
        stop_process(worker)
        app.close()


def test_one_request_id_follows_a_job_from_its_post_to_its_webhook(transactional_db: Any, tmp_path: Path) -> None:
    # Given the API and a worker logging JSON at INFO, on queues of their own
    prefix = f"test-{os.environ['TEST_RUN_ID']}-logs-{uuid.uuid4().hex[:8]}:"
    env = worker_env(CELERY_BROKER_KEY_PREFIX=prefix, LOG_FORMAT="json", LOG_LEVEL="INFO")
    client = client_create(name=f"logs-{uuid.uuid4().hex[:6]}")
    key = api_key_create(client=client)
    receiver = Receiver().start()
    name = f"logs-{uuid.uuid4().hex[:6]}@localhost"
    worker_log = tmp_path / "worker.log"
    worker, app = _worker_start(env, "jobs,webhooks,maintenance", name, prefix, worker_log)
    web, url = start_web(env, tmp_path)
    try:
        _wait_for_worker(app, name, worker)
        receiver.secret = requests.get(f"{url}/api/webhook-secret/", headers={"Authorization": f"Bearer {key}"},
                                       timeout=10).json()["secret"]

        # When a client submits a job with a callback and its own request id
        request_id = f"trace-{uuid.uuid4().hex}"
        response = requests.post(
            f"{url}/api/jobs/", timeout=10,
            headers={"Authorization": f"Bearer {key}", "X-Request-ID": request_id},
            json={"job_name": "api.tasks.hello_world", "payload": {"message": "logged"}, "callback_url": receiver.url},
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        receiver.wait_for(1, timeout=30)
        time.sleep(1)  # the attempt's line comes right after the receiver answered
    finally:
        stop(web)
        stop_process(worker)
        receiver.stop()
        app.close()

    # Then every line is one JSON object with the fields, and the request id finds the whole path
    lines = _lines(tmp_path / next(p.name for p in tmp_path.glob("gunicorn-*.log"))) + _lines(worker_log)
    assert lines and all(FIELDS <= set(line) for line in lines)
    followed = [line for line in lines if line.get("request_id") == request_id]
    messages = [line["message"] for line in followed]
    assert response.headers["X-Request-ID"] == request_id
    for message in ("job submitted", "request", "job started", "job finished", "webhook attempt"):
        assert messages.count(message) == 1, (message, messages)
    for line in followed:
        if line["message"] != "request":
            assert line["job_id"] == job_id and line["client"] == str(client.pk), line
    request_line = next(line for line in followed if line["message"] == "request")
    assert (request_line["route"], request_line["status"], request_line["level"]) == ("api/jobs/", 202, "info")
    finished = next(line for line in followed if line["message"] == "job finished")
    assert finished["status"] == "SUCCESS" and finished["logger"] == "jobs.transitions"
    attempt = next(line for line in followed if line["message"] == "webhook attempt")
    assert attempt["outcome"] == "success" and attempt["status_code"] == 200
    assert attempt["webhook_id"].startswith("msg_") and isinstance(attempt["delivery_id"], int)


def test_a_drain_names_each_deliverys_own_client_and_not_the_request_that_asked_for_it(
    transactional_db: Any, tmp_path: Path
) -> None:
    # Given a worker logging JSON at INFO, and two clients' deliveries due on its due queue
    prefix = f"test-{os.environ['TEST_RUN_ID']}-drain-{uuid.uuid4().hex[:8]}:"
    env = worker_env(CELERY_BROKER_KEY_PREFIX=prefix, LOG_FORMAT="json", LOG_LEVEL="INFO")
    receiver = Receiver().start()
    asker, other = (client_create(name=f"{who}-{uuid.uuid4().hex[:6]}") for who in ("asker", "other"))
    deliveries = {}
    for client in (asker, other):
        outbox.event_record(owner_id=client.pk, subject_id=uuid.uuid4(), event_type="job.succeeded",
                            data={"id": "x"}, callback_url=receiver.url, publish=False)
        deliveries[client.pk] = Delivery.objects.get(owner=client).pk
    redis.Redis.from_url(settings.CACHE_URL).rpush(cache.make_key(f"{prefix}webhooks:due"), *deliveries.values())
    name = f"drain-{uuid.uuid4().hex[:6]}@localhost"
    worker_log = tmp_path / "worker.log"
    worker, app = _worker_start(env, "webhooks", name, prefix, worker_log)
    try:
        _wait_for_worker(app, name, worker)

        # When one client's request (about none of these deliveries' jobs: another job's finish,
        # say) asks for the drain, its context going with the message
        request_id = f"trace-{uuid.uuid4().hex}"
        logs.bind(request_id=request_id, client=str(asker.pk))
        try:
            app.send_task("webhooks.deliveries_drain", queue="webhooks")
        finally:
            logs.clear()
        receiver.wait_for(2, timeout=30)
        time.sleep(1)  # the attempts' lines come right after the receiver answered
    finally:
        stop_process(worker)
        receiver.stop()
        app.close()

    # Then each attempt's line names its delivery's client, and neither names that request: it
    # made neither job (a job's own request id is on the lines its chain tail writes: above)
    attempts = {line["delivery_id"]: line for line in _lines(worker_log) if line["message"] == "webhook attempt"}
    mine, theirs = attempts[deliveries[asker.pk]], attempts[deliveries[other.pk]]
    assert (mine["client"], mine["request_id"]) == (str(asker.pk), None)
    assert (theirs["client"], theirs["request_id"]) == (str(other.pk), None)


def test_a_cancel_of_a_queued_job_leaves_no_warning_in_the_workers_logs(transactional_db: Any, tmp_path: Path) -> None:
    # Given a worker logging JSON at INFO, with no result backend (the default)
    worker_log = tmp_path / "worker.log"
    with _json_worker("revoke", "INFO", worker_log) as (name, app, _):
        # When a queued job is canceled: its task revoked on every worker, as the API does
        replies = app.control.revoke(str(uuid.uuid4()), destination=[name], reply=True, timeout=10)

    # Then the worker took it, and wrote no WARNING about the result backend it has none of
    assert replies and name in replies[0], replies
    warnings = [line for line in _lines(worker_log) if line["level"] in ("warning", "error")]
    assert warnings == [], warnings


SENDER = """
import http.server, ipaddress, logging, threading
import django
django.setup()
logging.getLogger("probe").debug("debug lines are written")
from core import http as outbound

class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(204)
        self.end_headers()
    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
threading.Thread(target=server.serve_forever, daemon=True).start()
url = f"http://127.0.0.1:{server.server_port}/services/T0/B0/%s?key=%s"
result = outbound.post(url, body=b"{}", headers={"Content-Type": "application/json"}, timeout_seconds=5,
                       allowed=[ipaddress.ip_network("127.0.0.0/8")])
assert result.status_code == 204, result
"""


def test_a_receivers_url_stays_out_of_the_log_at_debug(tmp_path: Path) -> None:
    """A receiver's URL path and query often hold its token (a chat webhook's /services/T0/B0/<token>,
    ?key=): the service's own lines name the host alone, and at LOG_LEVEL=DEBUG, what an operator
    turns on to see what a failing delivery does, urllib3 wrote a line per request with the whole
    URL."""
    path_token, query_token = (f"secret{uuid.uuid4().hex}" for _ in range(2))
    # The service's own settings, on their embedded defaults: sending needs no database.
    env = {name: value for name, value in os.environ.items() if not name.startswith(("DJANGO_", "CELERY_"))}
    env.update(DJANGO_SETTINGS_MODULE="core.settings", LOG_LEVEL="DEBUG", LOG_FORMAT="json", DATA_DIR=str(tmp_path))

    result = subprocess.run([sys.executable, "-c", SENDER % (path_token, query_token)], cwd=REPO, env=env,
                            capture_output=True, text=True, check=False, timeout=60)

    assert result.returncode == 0, result.stderr[-2000:]
    assert "debug lines are written" in result.stderr
    assert path_token not in result.stderr + result.stdout and query_token not in result.stderr + result.stdout


def test_a_pool_process_killed_is_one_json_line_in_the_workers_log(transactional_db: Any, tmp_path: Path) -> None:
    # Given a prefork worker logging JSON (as the image runs it) with its pool process up
    worker_log = tmp_path / "worker.log"
    with _json_worker("oom", "WARNING", worker_log) as (_, _, worker):
        children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
        assert children, "the worker has no pool process"

        # When the kernel's OOM killer (or a docker kill of it) ends the pool process
        os.kill(int(children[0]), 9)
        deadline = time.monotonic() + 30
        while "signal 9" not in worker_log.read_text():
            assert time.monotonic() < deadline, worker_log.read_text()
            time.sleep(0.2)
        time.sleep(0.5)  # the line's end

    # Then the worker's line about it, the only one that says what happened, is a JSON object like
    # every other (docs/deployment.md, "A worker killed mid-job"): in Celery's text format a log
    # shipper parsing the JSON lines dropped it, or took it apart as garbage
    killed = [line for line in worker_log.read_text().splitlines() if "signal 9" in line]
    assert killed, worker_log.read_text()
    record = json.loads(killed[0])
    assert record["level"] == "error" and FIELDS <= record.keys(), record
    assert "exited with 'signal 9 (SIGKILL)'" in record["message"], record
