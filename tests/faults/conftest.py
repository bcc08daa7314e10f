"""Fixtures for the fault-injection and load tests (`make test-faults`, marker `faults`).

One temporary PostgreSQL cluster per session with a migrated template database; each test gets
its own database copied from the template, its own Redis and its own processes. Measured figures
go to `var/faults-figures.json` (untracked), which docs/reliability.md summarises. Every test
module here sets `pytestmark = pytest.mark.faults`, which `make test` deselects.
"""
from __future__ import annotations

import json
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.stack import REPO, PostgresCluster, Stack, WebhookReceiver

FIGURES_FILE = REPO / "var" / "faults-figures.json"
TEMPLATE_DB = "jobapi_template"


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    # A SIGTERM (CI canceling the run) unwinds through the fixtures, so every server and
    # process they started is stopped rather than left running.
    signal.signal(signal.SIGTERM, _interrupt)
    cluster = PostgresCluster()
    try:
        cluster.init()
        cluster.start()
        cluster.sql(f"CREATE DATABASE {TEMPLATE_DB}")
        workdir = Path(tempfile.mkdtemp(prefix="jobapi-faults-migrate-"))
        migrator = Stack(pg=cluster, database=TEMPLATE_DB, workdir=workdir)
        try:
            migrator.manage("migrate", "--noinput")
        finally:
            migrator.close()
            shutil.rmtree(workdir, ignore_errors=True)
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def make_stack(pg_cluster: PostgresCluster, request: pytest.FixtureRequest) -> Iterator[Callable[..., Stack]]:
    """Factory: a Stack on a fresh copy of the migrated database. Closed after the test."""
    stacks: list[Stack] = []
    workdirs: list[Path] = []

    def factory(**kwargs: Any) -> Stack:
        database = f"faults_{uuid.uuid4().hex[:12]}"
        pg_cluster.sql(f"CREATE DATABASE {database} TEMPLATE {TEMPLATE_DB}")
        workdir = Path(tempfile.mkdtemp(prefix="jobapi-faults-"))
        workdirs.append(workdir)
        stack = Stack(pg=pg_cluster, database=database, workdir=workdir, **kwargs)
        stacks.append(stack)
        return stack

    yield factory
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for stack in stacks:
        if failed:
            print(stack.log_tails())
        stack.close()
        if failed:
            # Keep the whole logs (untracked) for a look after the run.
            kept = FIGURES_FILE.parent / "faults-logs" / request.node.name
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(stack.workdir, kept, ignore=shutil.ignore_patterns("redis", "data", "tmp"))
        try:
            pg_cluster.sql(f"DROP DATABASE IF EXISTS {stack.database} WITH (FORCE)")
        except Exception:  # noqa: BLE001, S110 (the cluster may be down: the test failed mid-restart)
            pass
    for workdir in workdirs:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    hook = WebhookReceiver()
    hook.up()
    yield hook
    hook.down()


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """Figures a test measured; merged into var/faults-figures.json under the test's name."""
    measured: dict[str, Any] = {}
    yield measured
    if not measured:
        return
    FIGURES_FILE.parent.mkdir(parents=True, exist_ok=True)
    try:
        existing = json.loads(FIGURES_FILE.read_text())
    except (OSError, ValueError):
        existing = {}
    measured["recorded_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    existing[request.node.name] = measured
    FIGURES_FILE.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")
