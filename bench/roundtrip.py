"""The raw Celery round trip: `echo.apply_async().get()` against the bench worker, sequentially.

Run as `python -m bench.roundtrip`: it warms up, prints `ready`, then for each line on stdin
holding a number N runs N round trips and prints their latencies (seconds) as a JSON list on
one line, until stdin closes. The harness asks for blocks between blocks of end-to-end probes,
so the ceiling and the figure see the same minutes of this machine.
"""
from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

import django

django.setup()

from bench.celery import ECHO_QUEUE, echo


def roundtrip(i: int) -> float:
    started = time.perf_counter()
    echo.apply_async(args=[i], queue=ECHO_QUEUE).get(timeout=30)
    return time.perf_counter() - started


def main() -> None:
    for i in range(20):  # warm the connections and the worker
        roundtrip(i)
    print("ready", flush=True)
    for line in sys.stdin:
        print(json.dumps([roundtrip(i) for i in range(int(line))]), flush=True)


if __name__ == "__main__":
    main()
