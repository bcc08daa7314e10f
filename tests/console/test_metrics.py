"""GET /metrics: off unless METRICS_ENABLED, behind METRICS_TOKEN, and what a job and its webhook
move, recorded by the API and the worker alike (the run's one multiprocess directory)."""
from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.test import Client as BrowserClient
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from core import housekeeping
from core.services import api_key_create, client_create
from tests.conftest import Api, serving
from tests.console.seed import seed

TOKEN = {"HTTP_AUTHORIZATION": "Bearer test-metrics-token"}
# Every figure the issue names, as /metrics exposes it.
REQUIRED = {
    "jobapi_jobs_submitted_total", "jobapi_jobs_finished_total", "jobapi_job_queue_wait_seconds",
    "jobapi_job_run_seconds", "jobapi_jobs", "jobapi_oldest_pending_job_age_seconds", "jobapi_queue_messages",
    "jobapi_webhook_attempts_total", "jobapi_webhook_delivery_seconds", "jobapi_webhook_pending_deliveries",
    "jobapi_http_requests_total", "jobapi_http_request_duration_seconds",
    "jobapi_webhook_endpoints_disabled_total", "jobapi_webhook_disabled_endpoints", "jobapi_webhook_held_deliveries",
    "jobapi_model_calls_total", "jobapi_model_call_duration_seconds", "jobapi_model_tokens_total",
    "jobapi_model_budget_refusals_total",
}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(url: str) -> Samples:
    response = requests.get(f"{url}/metrics", headers={"Authorization": "Bearer test-metrics-token"}, timeout=30)
    assert response.status_code == 200, response.text
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.mark.django_db
def test_metrics_answer_404_while_metrics_are_off() -> None:
    with override_settings(METRICS_ENABLED=False):
        response = BrowserClient().get("/metrics", **TOKEN)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.django_db
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", "Basic test-metrics-token"])
def test_metrics_need_the_token(authorization: str | None) -> None:
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}

    response = BrowserClient().get("/metrics", **headers)

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"]["code"] == "not_authenticated"


@pytest.mark.django_db
def test_metrics_name_every_figure_and_no_client_or_url() -> None:
    seeded = seed()

    response = BrowserClient().get("/metrics", **TOKEN)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    text = response.content.decode()
    names = {family.name for family in text_string_to_metric_families(text)}
    samples = {s.name for family in text_string_to_metric_families(text) for s in family.samples}
    assert REQUIRED <= names | samples
    samples_ = parse(text)
    assert value(samples_, "jobapi_jobs", status="PENDING") == 3
    assert value(samples_, "jobapi_jobs", status="FAILURE") == 3
    assert value(samples_, "jobapi_oldest_pending_job_age_seconds") >= 20 * 60
    assert value(samples_, "jobapi_webhook_pending_deliveries") == 2
    assert value(samples_, "jobapi_webhook_failing_receivers") == 2
    assert value(samples_, "jobapi_webhook_disabled_endpoints", reason="failing") == 1
    assert value(samples_, "jobapi_webhook_disabled_endpoints", reason="client") == 1
    assert value(samples_, "jobapi_webhook_held_deliveries") == 4
    assert value(samples_, "jobapi_ready") == 1
    assert {queue for (name, labels) in samples_ if name == "jobapi_queue_messages" for _, queue in labels} == {
        "jobs", "jobs_long", "maintenance", "webhooks"}
    # Cardinality: no client, job or delivery id, no URL or host in any label.
    assert str(seeded.client.pk) not in text and seeded.client.name not in text
    assert "example" not in text and str(seeded.oldest_pending.pk) not in text
    assert all(str(endpoint.pk) not in text for endpoint in seeded.disabled)


def test_a_replaced_api_process_leaves_its_counts_and_not_its_files(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    # Given the API served by gunicorn with a directory of its own, each process replaced after
    # five requests (in production after 20,000: thousands of processes a week, each leaving
    # two files that every scrape read)
    directory = tmp_path / "metrics"
    directory.mkdir()
    seen: list[float] = []
    with serving(make_api(), tmp_path / "gunicorn.log", PROMETHEUS_MULTIPROC_DIR=str(directory),
                 GUNICORN_CMD_ARGS="--max-requests 5 --max-requests-jitter 0") as (api, _):
        # When sixty requests go through a dozen processes, scraped as they go
        for done in range(1, 61):
            assert api.get("/healthz").status_code == 200
            if done % 10 == 0:
                seen.append(value(scrape(api.base_url), "jobapi_http_requests_total",
                                  route="healthz", method="GET", status="200"))
        deadline = time.monotonic() + 15
        while len(list(directory.glob("*.db"))) > 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        files = sorted(path.name for path in directory.glob("*.db"))
        final = value(scrape(api.base_url), "jobapi_http_requests_total", route="healthz", method="GET", status="200")

    # Then every request is counted, no count ever went back, and the directory holds the live
    # process's two files and the archive's two, not two for each process that ran
    assert final >= 60 and seen == sorted(seen) and final >= seen[-1], (seen, final)
    assert len(files) <= 4 and {"counter_archive.db", "histogram_archive.db"} <= set(files), files


@pytest.mark.django_db(transaction=True)
def test_the_periodic_tasks_count_their_runs_while_beat_schedules_them(celery_worker: str) -> None:
    # Given the run's worker, and beat beside it (the session's)
    def runs() -> dict[str, float]:
        samples = parse(BrowserClient().get("/metrics", **TOKEN).content.decode())
        return {labels_["task"]: count for (name, labels), count in samples.items()
                if name == "jobapi_periodic_task_runs_total" for labels_ in [dict(labels)]}

    first = runs()

    # When a few of its ticks have passed
    deadline = time.monotonic() + 30
    while (now := runs())["jobs.dispatch_sweep"] <= first["jobs.dispatch_sweep"] and time.monotonic() < deadline:
        time.sleep(0.5)

    # Then every periodic task has its series, from zero, and the sweeper's runs grew: what the
    # BeatNotRunning alert watches
    assert set(first) == {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert now["jobs.dispatch_sweep"] > first["jobs.dispatch_sweep"], (first, now)


@pytest.mark.django_db(transaction=True)
def test_a_periodic_run_that_finds_another_under_way_counts_neither_a_run_nor_a_failure(celery_worker: str) -> None:
    # Given the run's worker and beat (the deadline rule every second), and the rule's slot held
    # as a run under way holds it (core/housekeeping.py)
    def counts() -> tuple[float, float]:
        samples = parse(BrowserClient().get("/metrics", **TOKEN).content.decode())
        return (value(samples, "jobapi_periodic_task_runs_total", task="jobs.enforce_deadlines"),
                value(samples, "jobapi_periodic_task_failures_total", task="jobs.enforce_deadlines"))

    # (beat's own runs take the slot every second: wait for one under way to end; and one that
    # ended just before counts itself after, so the starting counts are read once it has)
    under_way = housekeeping.slots.acquire("jobs.enforce_deadlines", limit=1, lease_seconds=60, wait_seconds=30)
    assert under_way is not None
    try:
        time.sleep(0.2)
        held_from = counts()
        # When beat's runs come meanwhile (at least two ticks), and after the slot is let go
        time.sleep(3)
        held_until = counts()
    finally:
        under_way.release()
    deadline = time.monotonic() + 30
    while (after := counts())[0] <= held_until[0] and time.monotonic() < deadline:
        time.sleep(0.5)

    # Then the runs that did nothing moved neither count (a skipped run counted as run to its end
    # moved the rule's last success too, every other tick of a rule whose every real run failed
    # and lasted past its interval: PeriodicTaskFailing never fired); the runs after it count
    assert held_until == held_from
    assert after[0] > held_until[0], (held_until, after)


@pytest.mark.django_db
def test_metrics_answer_503_naming_the_variable_in_a_process_without_its_directory(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Given an API process started without scripts/web: metrics on, no PROMETHEUS_MULTIPROC_DIR
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")

    # When Prometheus scrapes it
    response = BrowserClient(raise_request_exception=False).get("/metrics", **TOKEN)

    # Then it answers why, and the log says it in one ERROR line naming the variable, with no
    # traceback: not beside it django.request's "Service Unavailable: /metrics", a second page
    # for the same scrape that says less
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "metrics_unavailable"
    assert "PROMETHEUS_MULTIPROC_DIR" in response.json()["error"]["message"]
    errors = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert [record.levelname for record in errors] == ["ERROR"], [record.getMessage() for record in errors]
    assert "PROMETHEUS_MULTIPROC_DIR" in errors[0].getMessage()
    assert not errors[0].exc_info


@pytest.mark.django_db
def test_what_a_client_sends_adds_no_series_past_the_first_of_each_kind() -> None:
    # Given a client with a key
    auth = {"HTTP_AUTHORIZATION": f"Bearer {api_key_create(client=client_create(name='hostile-client'))}"}
    browser = BrowserClient()

    def label_sets() -> set[frozenset[tuple[str, str]]]:
        text = BrowserClient().get("/metrics", **TOKEN).content.decode()
        assert "hostile" not in text.lower(), [line for line in text.splitlines() if "hostile" in line.lower()]
        return {labels for name, labels in parse(text) if name.startswith("jobapi_") and labels}

    def send(rounds: range) -> None:
        # Everything it chooses: a path no route matches, ids, a method, a job name, a request id
        for n in rounds:
            marker = f"hostile{n:04d}"
            browser.get(f"/{marker}/", **auth)
            browser.get(f"/api/jobs/{uuid.uuid4()}/", **auth)
            browser.generic(marker.upper(), "/api/jobs/", **auth)
            browser.post("/api/jobs/", {"job_name": marker, "payload": {}}, content_type="application/json",
                         HTTP_X_REQUEST_ID=f"{marker}-request-id", **auth)

    # When it sends ten rounds of them, then twenty more (a scrape before: it is counted too)
    label_sets()
    send(range(10))
    after_ten = label_sets()
    send(range(10, 30))

    # Then none of it is a label value (a route is its URL pattern, an unknown method OTHER), and
    # the last twenty rounds added no series: a client cannot grow Prometheus's memory or the
    # multiprocess files
    assert label_sets() == after_ten
