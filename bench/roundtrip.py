"""The raw Celery round trip: `echo.apply_async().get()` against the bench worker, sequentially.

Run as `python -m bench.roundtrip SAMPLES`; prints the latencies (seconds) as a JSON list.
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


def main() -> None:
    samples = int(sys.argv[1])
    for i in range(20):  # warm the connections and the worker
        echo.apply_async(args=[i], queue=ECHO_QUEUE).get(timeout=30)
    latencies = []
    for i in range(samples):
        started = time.perf_counter()
        echo.apply_async(args=[i], queue=ECHO_QUEUE).get(timeout=30)
        latencies.append(time.perf_counter() - started)
    print(json.dumps(latencies))


if __name__ == "__main__":
    main()
