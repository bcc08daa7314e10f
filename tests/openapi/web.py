"""Start the API as production runs it (gunicorn, whitenoise, DEBUG off) for out-of-process tools."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.conftest import REPO, free_port
from tests.conftest import stop_process as stop


def start_web(env: dict[str, str], log_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """gunicorn on a free loopback port with the test settings; returns (process, base URL)."""
    port = free_port()
    env = {**env, "DJANGO_SETTINGS_MODULE": "tests.settings", "DEBUG": "false"}
    log = open(log_dir / f"gunicorn-{port}.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "core.wsgi:application",
         "--bind", f"127.0.0.1:{port}", "--workers", "2", "--timeout", "60",
         "--control-socket", str(log_dir / f"gunicorn-{port}.ctl")],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(process, url, log.name)
    except BaseException:
        stop(process)  # never leave a server behind
        raise
    return process, url


def _wait_until_up(process: subprocess.Popen[bytes], url: str, log_name: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited early; see {log_name}")
        try:
            if requests.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except requests.RequestException:  # not listening yet, or still loading the app
            pass
        time.sleep(0.2)
    raise RuntimeError(f"gunicorn did not come up; see {log_name}")
