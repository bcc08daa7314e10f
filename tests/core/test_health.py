"""/readyz (and the figures that ask the same: /metrics, the console) against a broker that hangs:
the answer names it, and the process's other requests are not held meanwhile."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from tests.conftest import Api, serving, silent_server


def test_a_broker_that_never_answers_holds_no_other_request(make_api: Callable[..., Api], tmp_path: Any) -> None:
    # Given the API served with its one request turn per process (the default), and a broker
    # that takes connections and never answers (Redis stalled, a half-open network)
    answers: dict[str, requests.Response] = {}
    with silent_server() as broker, serving(make_api(), tmp_path / "gunicorn.log",
                                            CELERY_BROKER_URL=f"redis://{broker}/0") as (api, _):
        # When a readiness probe checks it, and a client lists its jobs meanwhile
        probe = threading.Thread(target=lambda: answers.update(readyz=api.get("/readyz", timeout=60)))
        probe.start()
        time.sleep(1)
        started = time.monotonic()
        listed = api.get("/api/jobs/")
        took = time.monotonic() - started
        probe.join()
        # (and afterwards requests on the process's many threads all answer)
        with ThreadPoolExecutor(8) as pool:
            statuses = set(pool.map(lambda _: api.get("/api/jobs/").status_code, range(40)))

    # Then the list answers at once, and the probe names the broker
    assert listed.status_code == 200 and took < 2, took
    assert answers["readyz"].status_code == 503
    assert answers["readyz"].json()["error"]["details"]["failed"] == ["broker"]
    assert statuses == {200}
