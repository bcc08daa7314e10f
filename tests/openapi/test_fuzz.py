"""Schemathesis fuzzes every operation of the committed spec against a running service.

Its own server (gunicorn, DEBUG off) and worker, on a broker key prefix of their own, so the
jobs it submits (hour-long sleeps among them) never reach the suite's shared worker. Limits that
would turn valid requests into 429s are off. Checks: no 5xx, and every response's status code,
content type, headers and body are the ones the spec documents.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from django.conf import settings

from core.services import api_key_create, client_create
from jobs.models import Job
from tests.conftest import REPO, stop_process, worker_env
from tests.openapi.conftest import SCHEMA_FILE
from tests.openapi.web import start_web, stop

CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
])
# Test cases per operation and phase; OPENAPI_FUZZ_EXAMPLES / OPENAPI_FUZZ_SEED override them
# (a fixed seed keeps CI reproducible; vary it locally to explore).
MAX_EXAMPLES = int(os.environ.get("OPENAPI_FUZZ_EXAMPLES", "50"))
SEED = os.environ.get("OPENAPI_FUZZ_SEED", "20261128")


@pytest.fixture
def fuzz_target(transactional_db: None, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(base URL, API key) of a server + worker pair of the fuzz run's own."""
    prefix = f"fuzz-{os.environ['TEST_RUN_ID']}-{uuid.uuid4().hex[:8]}:"
    env = worker_env(
        CELERY_BROKER_KEY_PREFIX=prefix,
        API_SUBMIT_RATE_PER_MINUTE="0",
        JOB_MAX_UNFINISHED_PER_CLIENT="0",
        WEBHOOK_ALLOWED_NETWORKS="127.0.0.0/8",
        WEBHOOK_RETRY_SCHEDULE="0",
        WEBHOOK_TIMEOUT_SECONDS="2",
        # `Prefer: wait` answers within the run's request timeout (see st_hooks).
        API_MAX_WAIT_SECONDS="2",
    )
    key = api_key_create(client=client_create(name=f"fuzz-{uuid.uuid4().hex[:8]}"))
    name = f"fuzz-{uuid.uuid4().hex[:8]}@localhost"
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "core", "worker", "-Q", "jobs,webhooks",
         "-c", "2", "-n", name, "--without-mingle", "--without-gossip", "-l", "warning"],
        cwd=REPO,
        env=env,
        stdout=open(tmp_path / "worker.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    web = None
    try:
        _wait_for_worker(name, prefix, worker)
        web, url = start_web(env, tmp_path)
        yield url, key
    finally:
        if web is not None:
            stop(web)
        # Its queue may hold hour-long sleeps: no warm shutdown.
        stop_process(worker, timeout=5)
        _purge(prefix)


def _probe(prefix: str) -> Celery:
    # Not the current app: shared tasks published later in this thread must keep using ours.
    probe = Celery(broker=settings.CELERY_BROKER_URL, set_as_current=False)
    probe.conf.broker_transport_options = {"global_keyprefix": prefix}
    return probe


def _wait_for_worker(name: str, prefix: str, worker: subprocess.Popen[bytes]) -> None:
    probe = _probe(prefix)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError("the fuzz worker exited early")
        if probe.control.ping(destination=[name], timeout=0.5):
            return
    raise RuntimeError("the fuzz worker did not come up")


def _purge(prefix: str) -> None:
    import redis

    r = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    keys = list(r.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        r.delete(*keys)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_schemathesis_finds_no_failure(fuzz_target: tuple[str, str], tmp_path: Path) -> None:
    url, key = fuzz_target
    bin_dir = Path(sys.executable).parent

    completed = subprocess.run(
        [str(bin_dir / "st"), "run", str(SCHEMA_FILE),
         "--url", url,
         "--header", f"Authorization: Bearer {key}",
         "--checks", CHECKS,
         "--phases", "examples,coverage,fuzzing,stateful",
         "--max-examples", str(MAX_EXAMPLES),
         "--seed", SEED,
         "--workers", "2",
         "--request-timeout", "30",
         "--generation-database", "none",
         "--no-color"],
        cwd=tmp_path,  # anything it writes stays in the temporary folder
        env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.openapi.st_hooks", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=840,
    )

    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-15000:]
    assert "No issues found" in output or "passed" in output, output[-5000:]
    # The run exercised the real pipeline: some of its jobs ran to completion.
    assert Job.objects.filter(status=Job.Status.SUCCESS).exists()
