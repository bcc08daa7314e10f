"""What a log line costs: the service's own INFO lines (a job transition, a delivery attempt, a
request), below the level and at INFO in each format, written to /dev/null, in microseconds of
CPU per line. docs/benchmarks.md, "What INFO costs", quotes it. It loads no Django settings
(the logging configuration is core/logs.py's alone), so it needs no database, secret key or data
directory.

    .venv/bin/python -m bench.logcost
"""
from __future__ import annotations

import logging
import logging.config
import os
import time
import uuid
from typing import Any

import structlog

from core import logs

LINES = 20_000
# The service's own lines in one job with a callback: submitted, the request, started,
# finished, one delivery attempt.
LINES_PER_JOB = 5


def _configure(level: str, json: bool) -> Any:
    config = logs.logging_config(level=level, json=json)
    config["handlers"]["console"] = {"class": "logging.FileHandler", "filename": os.devnull,
                                     "formatter": "structured"}
    logging.config.dictConfig(config)
    structlog.reset_defaults()
    logs.configure(level=level)
    return logs.get_logger("jobs.transitions")


def _per_line(log: Any) -> float:
    job_id, owner = uuid.uuid4(), uuid.uuid4()
    log.info("warm up", job_id=job_id)
    started = time.process_time()
    for _ in range(LINES):
        log.info("job finished", job_id=job_id, client=owner, job_name="api.tasks.hello_world",
                 status="SUCCESS", error_type=None, run_seconds=0.012)
    return (time.process_time() - started) / LINES * 1e6


def main() -> None:
    logs.bind(request_id=uuid.uuid4().hex, client=str(uuid.uuid4()))
    rows = [
        ("below the level (LOG_LEVEL=WARNING)", _per_line(_configure("WARNING", json=True))),
        ("INFO, LOG_FORMAT=text", _per_line(_configure("INFO", json=False))),
        ("INFO, LOG_FORMAT=json", _per_line(_configure("INFO", json=True))),
    ]
    print("| a job transition's line | µs of CPU per line | per job (5 lines) |")
    print("|---|---|---|")
    for label, micros in rows:
        print(f"| {label} | {micros:.2f} | {micros * LINES_PER_JOB:.1f} |")


if __name__ == "__main__":
    main()
