"""The operators' reads while a table they read is locked (a migration's ALTER TABLE, a LOCK
TABLE, a TRUNCATE): /metrics answers without its database figures and the console 503
`database_busy`, each at once, and the API process goes on serving. Each waited for the lock
as long as it was held, holding its process's one request turn: /healthz, /readyz and every
client's requests of that process waited behind it."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests
from django.conf import settings

from tests.conftest import Api, serving
from tests.console.test_database_down import operator_cookie
from tests.locks import rows_held

# A table the operators' reads read (the deliveries' counts) and a client's job reads never do:
# what a migration of it would lock. The scrape reads it after the queues' depths, whose broker
# call gives the request's turn away, and with it the turn's database connection.
LOCKED = "LOCK TABLE webhooks_delivery IN ACCESS EXCLUSIVE MODE"


def test_with_their_tables_locked_the_operators_reads_give_up_and_the_api_serves(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    # Given the service as production runs it (one request turn a process), an operator signed
    # in, and a client with a key
    signed_in = operator_cookie()
    scrape_headers = {"Authorization": f"Bearer {settings.METRICS_TOKEN}"}
    log_path = tmp_path / "gunicorn.log"
    with serving(make_api(), log_path, READYZ_CHECK_SECONDS="0") as (api, _):

        def get(path: str, headers: dict[str, str]) -> tuple[requests.Response, float]:
            started = time.monotonic()
            answer = requests.get(api.base_url + path, headers=headers, timeout=10)
            return answer, time.monotonic() - started

        # When a migration holds those tables locked, and Prometheus scrapes meanwhile while a
        # client reads its jobs, a probe asks /readyz and the operator's console refreshes
        with rows_held(LOCKED):
            scraped: list[tuple[requests.Response, float]] = []
            scraping = threading.Thread(target=lambda: scraped.append(get("/metrics", scrape_headers)))
            scraping.start()
            time.sleep(0.1)  # the scrape first, holding its turn
            listed, listed_in = get("/api/jobs/", api.headers())
            ready, ready_in = get("/readyz", {})
            console, console_in = get("/console/?fragment=1", signed_in)
            scraping.join()
        # And once the lock is released
        after, _ = get("/metrics", scrape_headers)
        console_after, _ = get("/console/?fragment=1", signed_in)

    # Then the scrape answered at once, ready, its database figures left out
    (scrape, scrape_in), = scraped
    assert scrape.status_code == 200 and scrape_in < 3, (scrape.status_code, scrape_in)
    assert "\njobapi_ready 1.0\n" in scrape.text and "jobapi_jobs{" not in scrape.text, scrape.text
    # ...but not the broker's queues' messages, which it still reads (they went blank with the
    # database's figures); their consumers, counted from the workers' heartbeats in the database,
    # are left out, not shown as none (which would fire the "no consumer" alert)
    assert 'jobapi_queue_messages{queue="jobs"}' in scrape.text, scrape.text
    assert "jobapi_queue_consumers{" not in scrape.text, scrape.text
    # And the client's list and the probe were served meanwhile, not held behind it
    assert (listed.status_code, ready.status_code) == (200, 200) and max(listed_in, ready_in) < 3, (
        listed_in, ready_in)
    # And the console said why it has no figures, at once
    assert console.status_code == 503 and console_in < 3, (console.status_code, console.text)
    assert console.json()["error"]["code"] == "database_busy" and console.headers["Retry-After"] == "5"
    # And each said so in one line, no traceback
    log = log_path.read_text()
    assert "/metrics: the database figures are left out: not read within OPERATOR_READ_TIMEOUT_SECONDS" in log, log
    assert "GET /console/: its reads were given up" in log and "Traceback" not in log, log
    # And with the lock released the figures are back
    assert 'jobapi_jobs{status="PENDING"}' in after.text and console_after.status_code == 200
