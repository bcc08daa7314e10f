"""X-Request-ID: a well-formed one is kept and returned, anything else is replaced by a new id;
every answer carries one, errors and the health checks included."""
from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from django.db import connection, transaction
from django.test import Client as BrowserClient

from core.request_context import WELL_FORMED_REQUEST_ID
from gunicorn_worker import new_request_id
from tests.conftest import Api, serving

NEW_ID = re.compile(r"[0-9a-f]{32}")


@pytest.mark.parametrize("given", [
    "3f2b9c1e-8a4d-4c55-9d3e-1b2a3c4d5e6f",
    "Root=1-67891233-abcdef012345678912345678",
    "req_01HZX3Q2ABCDEF.v2:web+1/a@b",
])
def test_a_well_formed_request_id_is_returned_as_given(db: None, given: str) -> None:
    response = BrowserClient().get("/healthz", HTTP_X_REQUEST_ID=given)

    assert response["X-Request-ID"] == given


@pytest.mark.parametrize("given", ["", "short", "has space in it", "line\nbreak-injected", "x" * 201, "<script>x</script>"])
def test_anything_else_is_replaced_by_a_new_id(db: None, given: str) -> None:
    response = BrowserClient().get("/healthz", HTTP_X_REQUEST_ID=given)

    assert NEW_ID.fullmatch(response["X-Request-ID"])


def test_the_api_workers_own_answers_make_their_ids_as_the_api_does(db: None) -> None:
    # gunicorn_worker.py (its answers to a request Django never saw) cannot import core: it
    # makes its ids itself, and an operator or a client should not tell them apart.
    made = [new_request_id() for _ in range(20)]
    answered = BrowserClient().get("/healthz")["X-Request-ID"]

    assert all(NEW_ID.fullmatch(made_id) and WELL_FORMED_REQUEST_ID.fullmatch(made_id) for made_id in made), made
    assert NEW_ID.fullmatch(answered) and len(set(made)) == len(made)


def test_every_answer_has_its_own_id_errors_included(db: None) -> None:
    browser = BrowserClient()

    answers = [browser.get("/healthz"), browser.get("/healthz"), browser.get("/api/jobs/"), browser.get("/nowhere")]

    assert [a.status_code for a in answers] == [200, 200, 401, 404]
    ids = [a["X-Request-ID"] for a in answers]
    assert all(NEW_ID.fullmatch(i) for i in ids) and len(set(ids)) == 4


def test_the_time_a_request_waits_for_its_turn_is_in_its_duration(make_api: Callable[..., Api], tmp_path: Path) -> None:
    # Given the API served with its one request turn per process (the default), and a request
    # holding that turn for seconds (a list waiting for a lock on the jobs table)
    log_path = tmp_path / "gunicorn.log"
    with serving(make_api(), log_path, LOG_LEVEL="INFO", LOG_FORMAT="json") as (api, _):
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("LOCK TABLE jobs_job IN ACCESS EXCLUSIVE MODE")
            holder = threading.Thread(target=lambda: api.get("/api/jobs/", timeout=60))
            holder.start()
            time.sleep(1)

            # When /healthz comes meanwhile, and waits for the turn
            answered: list[float] = []
            started = time.monotonic()
            asker = threading.Thread(target=lambda: answered.append(
                api.get("/healthz", headers={"X-Request-ID": "waited-for-its-turn"}).status_code))
            asker.start()
            time.sleep(3)
        asker.join()
        waited = time.monotonic() - started
        holder.join()

    # Then its log line (and its metrics, from the same figure) counts the wait: what its client saw
    assert answered == [200] and waited > 2.5, waited
    [line] = [json.loads(text) for text in log_path.read_text().splitlines()
              if text.startswith("{") and "waited-for-its-turn" in text]
    assert line["route"] == "healthz" and line["duration_ms"] >= (waited - 0.5) * 1000, (line, waited)
