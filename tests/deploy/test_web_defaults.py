"""The API's thread count by default is one number (core/web_defaults.py) that gunicorn's config,
scripts/web and the settings all read: each wrote its own 256 before, and one changed alone had
gunicorn run one count while the script checked connections against another and the settings
left room for waits out of a third."""
from __future__ import annotations

import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

# Another count than the default, written into a copy of the checkout's files.
CHANGED = 40


def _checkout_with_default(tmp_path: Path, threads: int) -> Path:
    """A copy of what gunicorn's config and scripts/web read, the default written as `threads`."""
    for name in ("gunicorn.conf.py", "scripts/web", "scripts/dotenv.sh", "core/web_defaults.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, tmp_path / name)
    defaults = tmp_path / "core" / "web_defaults.py"
    text = defaults.read_text()
    assert "WEB_THREADS_DEFAULT = 256\n" in text
    defaults.write_text(text.replace("WEB_THREADS_DEFAULT = 256\n", f"WEB_THREADS_DEFAULT = {threads}\n"))
    return tmp_path


def _without_threads() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("WEB_THREADS", "WEB_MAX_CONNECTIONS")}


def _gunicorn_threads(checkout: Path) -> int:
    """gunicorn's `threads` as its config works it out with WEB_THREADS unset."""
    output = subprocess.run(
        [sys.executable, "-c", "import runpy, sys; print(runpy.run_path(sys.argv[1])['threads'])",
         str(checkout / "gunicorn.conf.py")],
        env=_without_threads(), capture_output=True, text=True, check=True, cwd=checkout,
    ).stdout
    return int(output)


def _settings_waiters(default_module: Path) -> int:
    """The settings' API_MAX_WAITERS_PER_PROCESS with WEB_THREADS unset, core.web_defaults read from
    `default_module`."""
    program = (
        "import runpy, sys, types\n"
        "module = types.ModuleType('core.web_defaults')\n"
        "module.__dict__.update(runpy.run_path(sys.argv[1]))\n"
        "sys.modules['core.web_defaults'] = module\n"
        "from django.conf import settings\n"
        "print(settings.API_MAX_WAITERS_PER_PROCESS)\n"
    )
    env = _without_threads() | {"DJANGO_SETTINGS_MODULE": "tests.settings"}
    env.pop("API_MAX_WAITERS_PER_PROCESS", None)
    output = subprocess.run([sys.executable, "-c", program, str(default_module)], env=env, cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    return int(output)


def test_gunicorn_and_the_settings_see_the_same_threads_with_web_threads_unset() -> None:
    threads = runpy.run_path(str(REPO / "core" / "web_defaults.py"))["WEB_THREADS_DEFAULT"]

    assert _gunicorn_threads(REPO) == threads
    # The settings leave 10 threads for short requests (API_MAX_WAITERS_PER_PROCESS's default).
    assert _settings_waiters(REPO / "core" / "web_defaults.py") == threads - 10


def test_the_default_changed_in_its_one_place_changes_gunicorn_the_script_and_the_settings(tmp_path: Path) -> None:
    # Given a checkout whose default is 40 threads, written once
    checkout = _checkout_with_default(tmp_path, CHANGED)

    # Then gunicorn runs 40 threads a process, the settings hold 40 - 10 for waits, and the
    # script checks connections against 40: 39 refused naming 40
    assert _gunicorn_threads(checkout) == CHANGED
    assert _settings_waiters(checkout / "core" / "web_defaults.py") == CHANGED - 10
    refused = subprocess.run(
        [str(checkout / "scripts" / "web")], capture_output=True, text=True, check=False, timeout=30,
        env={"PATH": "/usr/bin:/bin", "VIRTUAL_ENV": sys.prefix, "WEB_MAX_CONNECTIONS": str(CHANGED - 1)},
    )
    assert refused.returncode == 1, refused.stderr[-500:]
    assert refused.stderr.splitlines() == [
        f"{checkout}/scripts/web: WEB_MAX_CONNECTIONS must be a whole number from {CHANGED} to {960 - 2 * CHANGED}, not '{CHANGED - 1}'."
    ]


def _gunicorn_workers(cores: int) -> int:
    """gunicorn's `workers` as its config works it out with WEB_CONCURRENCY unset, on `cores` cores."""
    program = (
        "import multiprocessing, runpy, sys\n"
        "multiprocessing.cpu_count = lambda: int(sys.argv[2])\n"
        "print(runpy.run_path(sys.argv[1])['workers'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "WEB_CONCURRENCY"}
    output = subprocess.run([sys.executable, "-c", program, str(REPO / "gunicorn.conf.py"), str(cores)],
                            env=env, capture_output=True, text=True, check=True, cwd=REPO).stdout
    return int(output)


def test_gunicorns_default_processes_stop_at_the_most_scripts_web_allows() -> None:
    most = runpy.run_path(str(REPO / "core" / "web_defaults.py"))["WEB_PROCESSES_MAX"]

    # Cores + 1 below it; on a machine of 64 cores or more (128: 129 processes, each with its
    # PostgreSQL connections, before), the most scripts/web refuses past.
    assert _gunicorn_workers(3) == 4
    assert _gunicorn_workers(127) == most == 64
