"""A run of the suite leaves the system's temporary folder as it found it, but for pytest's own
(empty) folder of the user: each run left its metrics directory (tests/settings.py), the session
worker's log and pytest's directory of the run, with every test's tmp_path, in /tmp. A run that
failed keeps the session worker's and beat's logs, in pytest's directory of the run, and says
where (tests/conftest.py celery_logs, pytest.ini)."""
from __future__ import annotations

import ast
import getpass
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

# A run of one test, which stands in for the session's worker: it writes its log where the worker
# writes its own, and starts a process that inherits the run's metrics directory, as the worker
# does.
ONE_TEST = """
import os
import subprocess
import sys
from pathlib import Path


def test_a_worker_ran(celery_logs: Path) -> None:
    (celery_logs / "test-worker@localhost.log").write_text("a worker's line")
    subprocess.run([sys.executable, "-c", "import tests.settings"], check=True)
    assert Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).is_dir()
    assert {passes}
"""


def _run(tmp_path: Path, *, passes: bool) -> subprocess.CompletedProcess[str]:
    """A run of ONE_TEST with the suite's settings and fixtures, as make test runs, in the
    calling test's system temporary folder (system_tmp)."""
    test_file = tmp_path / "test_one.py"
    test_file.write_text(ONE_TEST.format(passes=passes))
    # The suite's fixtures and hooks, for a test outside tests/.
    (tmp_path / "conftest.py").write_text("from tests.conftest import *  # noqa: F403\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PROMETHEUS_MULTIPROC_DIR", "PYTEST_ADDOPTS")}
    # The plugins it needs only (the others, hypothesis's and schemathesis's, take a second and a
    # half to load).
    env.update(PYTHONPATH=str(REPO), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(REPO / "pytest.ini"), "--rootdir", str(REPO),
         "-p", "pytest_django.plugin", "-p", "pytest_timeout", "-p", "no:cacheprovider", str(test_file)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    return run


def test_a_run_that_passed_leaves_the_temporary_folder_as_it_found_it(tmp_path: Path, system_tmp: Path) -> None:
    # When a run passes
    run = _run(tmp_path, passes=True)
    assert run.returncode == 0, run.stdout + run.stderr

    # Then all it left in the system's temporary folder is pytest's folder of the user, empty
    assert [str(path.relative_to(system_tmp)) for path in system_tmp.rglob("*")] == [
        f"pytest-of-{getpass.getuser()}"
    ]


def test_a_run_that_failed_keeps_the_workers_logs_and_says_where(tmp_path: Path, system_tmp: Path) -> None:
    # When a run fails
    run = _run(tmp_path, passes=False)
    assert run.returncode == 1, run.stdout + run.stderr

    # Then its summary names the directory of the worker's and beat's logs, which it kept
    named = [line.split(": ", 1)[1].strip(" -") for line in run.stdout.splitlines()
             if "the session worker's and beat's logs: " in line]
    assert len(named) == 1, run.stdout
    kept = Path(named[0])
    assert kept.is_relative_to(system_tmp)
    assert (kept / "test-worker@localhost.log").read_text() == "a worker's line"


def test_no_test_or_benchmark_names_a_fixed_path_in_the_system_temporary_folder() -> None:
    """A fixed path there outlives the run that made it (tests/webhooks/test_retries.py's data
    directory, /tmp/jobapi-wh-defaults, did): a test's files go in its tmp_path, a benchmark's
    in a temporary directory it removes (bench/profile.py)."""
    fixed = {
        f"{path.relative_to(REPO)}:{node.lineno}"
        for path in sorted([*(REPO / "tests").rglob("*.py"), *(REPO / "bench").rglob("*.py")])
        if path != Path(__file__)
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        and node.value.startswith(("/tmp/", "/dev/shm/"))
    }
    assert fixed == set()
