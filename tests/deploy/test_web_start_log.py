"""What scripts/web (the API in `make run` and in the image) prints as it starts and stops at its
defaults: no WARNING a newcomer or an operator would go and check, for a configuration meant."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import REPO, free_port, stop_process, wait_until_up


def test_the_api_starts_and_stops_without_a_warning_at_its_defaults(tmp_path: Path) -> None:
    # Given the API's script with its defaults for threads and connections (keep-alive off, as
    # with sync workers: a process's connections no more than its threads)
    env = {k: v for k, v in os.environ.items() if k not in ("WEB_THREADS", "WEB_MAX_CONNECTIONS")}
    env.update(PORT=str(free_port()), WEB_CONCURRENCY="1", DJANGO_SETTINGS_MODULE="tests.settings")
    log_path = tmp_path / "web.log"

    # When it starts, serves, and stops
    with open(log_path, "wb") as log:
        process = subprocess.Popen(["scripts/web"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_up(f"http://127.0.0.1:{env['PORT']}/healthz", process, log_path)
    finally:
        stop_process(process)

    # Then its log has no WARNING: gunicorn's "No keepalived connections can be handled. Check
    # the number of worker connections and threads." came at every start, the first line make
    # run printed, for the configuration as meant
    output = log_path.read_text()
    assert process.returncode == 0, output
    assert "[WARNING]" not in output and "keepalived" not in output, output
