"""The baseline's Celery app: the naive submit publishes here, and the raw round trip runs here."""
from __future__ import annotations

import os
from typing import Any

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

app = Celery("bench")
app.config_from_object("django.conf:settings", namespace="CELERY")

# Messages of the naive submit; nothing consumes this queue (the harness purges it).
NAIVE_QUEUE = "bench_naive"
# The raw round trip's queue, consumed by the harness's bench worker.
ECHO_QUEUE = "bench_echo"


@app.task(name="bench.noop", ignore_result=True)
def noop(row_id: str) -> None:
    """The naive submit's message; its body is never run during a measurement."""


@app.task(name="bench.echo")
def echo(value: Any) -> Any:
    """The raw round trip: publish, run, store the result, read it back."""
    return value
