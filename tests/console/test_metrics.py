"""GET /metrics: off unless METRICS_ENABLED, behind METRICS_TOKEN, and what a job and its webhook
move, recorded by the API and the worker alike (the run's one multiprocess directory)."""
from __future__ import annotations

import pytest
import requests
from django.test import Client as BrowserClient
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from tests.console.seed import seed

TOKEN = {"HTTP_AUTHORIZATION": "Bearer test-metrics-token"}
# Every figure the issue names, as /metrics exposes it.
REQUIRED = {
    "jobapi_jobs_submitted_total", "jobapi_jobs_finished_total", "jobapi_job_queue_wait_seconds",
    "jobapi_job_run_seconds", "jobapi_jobs", "jobapi_oldest_pending_job_age_seconds", "jobapi_queue_messages",
    "jobapi_webhook_attempts_total", "jobapi_webhook_delivery_seconds", "jobapi_webhook_pending_deliveries",
    "jobapi_http_requests_total", "jobapi_http_request_duration_seconds",
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
    assert value(samples_, "jobapi_ready") == 1
    assert {queue for (name, labels) in samples_ if name == "jobapi_queue_messages" for _, queue in labels} == {
        "jobs", "jobs_long", "maintenance", "webhooks"}
    # Cardinality: no client, job or delivery id, no URL or host in any label.
    assert str(seeded.client.pk) not in text and seeded.client.name not in text
    assert "example" not in text and str(seeded.oldest_pending.pk) not in text
