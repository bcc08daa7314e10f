"""Start the API as production runs it (gunicorn, whitenoise, DEBUG off) for out-of-process tools."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, free_port, wait_until_up
from tests.conftest import stop_process as stop


def start_web(env: dict[str, str], log_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """gunicorn on a free loopback port with the test settings; returns (process, base URL)."""
    port = free_port()
    env = {**env, "DJANGO_SETTINGS_MODULE": "tests.settings", "DEBUG": "false"}
    log_path = log_dir / f"gunicorn-{port}.log"
    with open(log_path, "wb") as log:
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
        wait_until_up(f"{url}/healthz", process, log_path)
    except BaseException:
        stop(process)  # never leave a server behind
        raise
    return process, url

