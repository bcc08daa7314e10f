"""The settings are checked against the job types at `manage.py check` (and `migrate`, which compose
runs before anything else): a Redis visibility timeout shorter than a job type's message may wait
unacknowledged is named, with the value that covers them all."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO
from tests.deploy.test_production_settings import production_env


def manage_check(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=REPO, env={**production_env(tmp_path), **env},
        capture_output=True, text=True, check=False, timeout=120,
    )


def test_a_visibility_timeout_shorter_than_a_jobs_longest_wait_is_named(tmp_path: Path) -> None:
    result = manage_check(tmp_path, CELERY_BROKER_VISIBILITY_TIMEOUT_SECONDS="3700")

    assert "jobs.W001" in result.stderr, result.stderr
    # The long-running type holds its message for its hour plus two minutes; the checklist for a
    # step's 380 s after a retry's countdown of at most a sweep (5 s), not after an hour's
    # backoff (which waits on the job's row); hello_world, 20 s, is not named.
    assert "api.tasks.long_running_task (3,720 s)" in result.stderr
    assert "generate_checklist_from_guidelines" not in result.stderr
    assert "hello_world" not in result.stderr
    assert "Set it to 3,720 s or more" in result.stderr


def test_the_default_visibility_timeout_covers_every_job_type(tmp_path: Path) -> None:
    result = manage_check(tmp_path)

    assert result.returncode == 0, result.stderr
    assert "jobs.W001" not in result.stderr
