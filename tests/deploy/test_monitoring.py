"""The monitoring profile's files, checked statically (no Docker engine here): Prometheus's
configuration and alert rules and Grafana's dashboard parse, each rule and panel names only
metrics GET /metrics serves, Prometheus scrapes what compose runs where compose runs it, and
Grafana is provisioned from the files compose mounts."""
from __future__ import annotations

import json
import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from django.conf import settings
from django.db import transaction
from django.test import Client as BrowserClient
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from core.celery import app as celery_app
from core.services import api_key_create, client_create
from jobs.models import Job
from jobs.registry import job_type_get
from tests.conftest import (
    REPO,
    free_port,
    start_worker,
    stop_process,
    updates_refused,
    updates_refused_dropped,
    worker_env,
)
from tests.console.seed import seed

MONITORING = REPO / "monitoring"
# Series Prometheus makes itself, not the service.
PROMETHEUS_OWN = {"up", "ALERTS"}
METRIC = re.compile(r"\b(jobapi_[a-z0-9_]+|up|ALERTS)\b")
# What the rules must watch, by the metric each one reads.
ALERTED = {
    "jobapi_oldest_pending_job_age_seconds",  # jobs pending too long
    "jobapi_jobs_finished_total",  # the failure rate
    "jobapi_webhook_failing_receivers",  # deliveries failing per receiver
    "jobapi_webhook_endpoints_disabled_total",  # an endpoint the service disabled
    "jobapi_queue_consumers",  # a worker queue with no consumer
    "jobapi_ready",  # /readyz failing
    "jobapi_jobs_of_unknown_types",  # jobs no process here can run (a type removed or renamed)
    "jobapi_periodic_task_runs_total",  # beat not running
    "jobapi_periodic_task_last_success_timestamp_seconds",  # a periodic task that keeps failing
    "jobapi_periodic_task_interval_seconds",
    "jobapi_model_calls_total",  # the model provider failing
}
HELLO = "api.tasks.hello_world"
# Served only by the worker that consumes the periodic tasks' queue (from its start), not by the
# API: test_a_periodic_task_that_fails_is_served_as_the_rule_reads_it checks that worker serves it.
WORKER_SERVED = {"jobapi_periodic_task_last_success_timestamp_seconds", "jobapi_periodic_task_interval_seconds"}


def _yaml(path: str) -> Any:
    return yaml.safe_load((MONITORING / path).read_text())


def _compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yaml").read_text())


def rule_expressions() -> list[str]:
    return [rule["expr"] for group in _yaml("prometheus/alerts.yml")["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads((MONITORING / "grafana/dashboards/jobapi.json").read_text())


def panel_expressions() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel.get("targets", [])]


@pytest.fixture
def served(db: None) -> set[str]:
    """Every series name GET /metrics serves, with rows in every figure."""
    seed()
    BrowserClient().get("/healthz")  # one request answered: the HTTP figures have a series
    response = BrowserClient().get("/metrics", HTTP_AUTHORIZATION="Bearer test-metrics-token")
    assert response.status_code == 200
    families = list(text_string_to_metric_families(response.content.decode()))
    return {family.name for family in families} | {s.name for family in families for s in family.samples}


def test_the_alert_rules_parse_and_each_names_only_served_metrics(served: set[str]) -> None:
    groups = _yaml("prometheus/alerts.yml")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]

    assert len({rule["alert"] for rule in rules}) == len(rules) == 12
    for rule in rules:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        named = set(METRIC.findall(rule["expr"]))
        assert named and named - PROMETHEUS_OWN - WORKER_SERVED <= served, (rule["alert"], named - served)
    assert ALERTED <= {name for expr in rule_expressions() for name in METRIC.findall(expr)}


def test_the_dashboard_parses_and_each_panel_names_only_served_metrics(served: set[str]) -> None:
    board = dashboard()
    expressions = panel_expressions()

    assert board["uid"] == "jobapi" and expressions
    named = {name for expr in expressions for name in METRIC.findall(expr)}
    assert named - PROMETHEUS_OWN <= served, named - served
    # The figures of the issue, each on a panel.
    assert {
        "jobapi_jobs_submitted_total", "jobapi_jobs_finished_total", "jobapi_job_queue_wait_seconds_bucket",
        "jobapi_job_run_seconds_bucket", "jobapi_jobs", "jobapi_oldest_pending_job_age_seconds",
        "jobapi_queue_messages", "jobapi_webhook_attempts_total", "jobapi_webhook_delivery_seconds_bucket",
        "jobapi_webhook_pending_deliveries", "jobapi_webhook_disabled_endpoints", "jobapi_webhook_held_deliveries",
        "jobapi_webhook_endpoints_disabled_total", "jobapi_http_requests_total",
        "jobapi_http_request_duration_seconds_bucket", "jobapi_model_calls_total",
        "jobapi_model_call_duration_seconds_bucket", "jobapi_model_tokens_total", "jobapi_model_budget_refusals_total",
    } <= named
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "prometheus", panel["title"]


def test_prometheus_scrapes_the_api_with_the_token_and_every_worker_on_its_port() -> None:
    config = _yaml("prometheus/prometheus.yml")
    compose = _compose()
    services = compose["services"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}

    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    api = jobs["api"]
    assert api["metrics_path"] == "/metrics"
    assert api["authorization"] == {"type": "Bearer", "credentials_file": "/run/secrets/metrics_token"}
    assert api["static_configs"] == [{"targets": ["web:8000"]}]
    # The API answers to the name Prometheus uses, and does not redirect it to HTTPS.
    assert services["web"]["environment"]["ALLOWED_HOSTS"].endswith(",web")
    from django.conf import settings

    assert r"^metrics$" in settings.SECURE_REDIRECT_EXEMPT
    for worker in ("worker", "worker-long", "deliveries"):
        environment = services[worker]["environment"]
        port = int(environment["METRICS_PORT"])
        assert environment["METRICS_ADDRESS"] == "0.0.0.0"
        assert jobs[worker]["dns_sd_configs"] == [{"names": [worker], "type": "A", "port": port}]
        assert "ports" not in services[worker]  # never published
    # The token comes from .env as a secret; the rules and the configuration are mounted.
    assert compose["secrets"] == {"metrics_token": {"environment": "METRICS_TOKEN"}}
    prometheus = services["prometheus"]
    assert prometheus["secrets"] == ["metrics_token"]
    assert "./monitoring/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]


def test_a_scrape_target_down_fires_an_alert_whatever_its_job() -> None:
    # Given the scrape jobs Prometheus runs (the API, each worker service)
    jobs = {job["job_name"] for job in _yaml("prometheus/prometheus.yml")["scrape_configs"]}

    # When the rules on `up` are read, each with the jobs its selector matches
    watched = set()
    for expr in rule_expressions():
        for selector in re.findall(r"\bup\{job(=~?)\"([^\"]*)\"\}", expr):
            watched |= {job for job in jobs if re.fullmatch(selector[1], job)} if selector[0] == "=~" else {selector[1]}

    # Then each job's target down fires one: a worker unscraped left the rules on its counters
    # blind (and BeatNotRunning firing for the deliveries worker) with nothing saying why
    assert watched == jobs


# Each alert's runbook: the entry of docs/deployment.md's "When something breaks" (by its bold
# title) that says what it means and what to do.
RUNBOOK = {
    "JobsPendingTooLong": "A queue backlog.",
    "JobFailureRateHigh": "Many jobs failing.",
    "WebhookReceiverFailing": "A receiver failing for hours.",
    "WebhookEndpointDisabled": "A receiver failing for hours.",
    "ModelProviderFailing": "The model provider failing.",
    "QueueWithoutConsumer": "A queue backlog.",
    "ReadyzFailing": "PostgreSQL down or restarting.",
    "WorkerMetricsDown": "A worker Prometheus cannot scrape.",
    "DatabaseFiguresMissing": "A table locked",
    "JobsOfUnknownTypes": "Jobs of a type the code does not register.",
    "BeatNotRunning": "beat not running.",
    "PeriodicTaskFailing": "A periodic task that keeps failing.",
}


def test_every_alert_has_its_entry_in_when_something_breaks() -> None:
    # Given the operator's guide's "When something breaks", each entry a paragraph opening with
    # its title in bold
    guide = (REPO / "docs/deployment.md").read_text()
    breaks = guide.split("\n## When something breaks\n", 1)[1].split("\n## ", 1)[0]
    entries = {paragraph[2:].split("**", 1)[0]: paragraph for paragraph in breaks.split("\n\n")
               if paragraph.startswith("**")}

    # Then each alert Prometheus may fire has an entry, which names it (JobFailureRateHigh had
    # none, and nothing compared the rules with the guide)
    alerts = {rule["alert"] for group in _yaml("prometheus/alerts.yml")["groups"] for rule in group["rules"]}
    assert alerts == set(RUNBOOK)
    for alert, title in RUNBOOK.items():
        assert f"`{alert}" in entries[title], alert


def test_grafana_is_provisioned_from_the_files_compose_mounts() -> None:
    grafana = _compose()["services"]["grafana"]
    mounts = dict(volume.rsplit(":", 2)[:2] for volume in grafana["volumes"] if volume.startswith("./"))
    datasources = _yaml("grafana/provisioning/datasources/prometheus.yml")["datasources"]
    providers = _yaml("grafana/provisioning/dashboards/jobapi.yml")["providers"]

    assert mounts == {
        "./monitoring/grafana/provisioning": "/etc/grafana/provisioning",
        "./monitoring/grafana/dashboards": "/var/lib/grafana/dashboards",
    }
    assert datasources == [{
        "name": "Prometheus", "uid": "prometheus", "type": "prometheus", "access": "proxy",
        "url": "http://prometheus:9090", "isDefault": True, "editable": False,
    }]
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"
    assert (MONITORING / "grafana/dashboards").is_dir()
    # No admin/admin: it refuses to start without a password; and it calls nothing outside.
    assert "GRAFANA_ADMIN_PASSWORD" in grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert "test -n" in grafana["entrypoint"][-1]
    assert grafana["environment"]["GF_ANALYTICS_REPORTING_ENABLED"] == "false"


def _scrape_host(job: dict[str, Any]) -> str:
    """The Host header Prometheus sends to a job's target: its __address__. A DNS discovery
    of type A gives each address it resolves (a container's IP), never the name it asked."""
    if "static_configs" in job:
        return str(job["static_configs"][0]["targets"][0])
    [discovery] = job["dns_sd_configs"]
    assert discovery["type"] == "A"
    return f"172.18.0.5:{discovery['port']}"


@pytest.mark.django_db
def test_the_api_answers_prometheus_under_the_host_it_scrapes_by(settings: Any) -> None:
    # Given the web service's ALLOWED_HOSTS as compose sets it (with .env's default)
    web = _compose()["services"]["web"]["environment"]["ALLOWED_HOSTS"]
    settings.ALLOWED_HOSTS = re.sub(r"\$\{ALLOWED_HOSTS:-([^}]*)\}", r"\1", web).split(",")
    job = {job["job_name"]: job for job in _yaml("prometheus/prometheus.yml")["scrape_configs"]}["api"]

    # When Prometheus scrapes the API
    response = BrowserClient().get(job["metrics_path"], HTTP_HOST=_scrape_host(job),
                                   HTTP_AUTHORIZATION="Bearer test-metrics-token")

    # Then it gets the metrics, not Django's 400 for a host it does not serve
    assert response.status_code == 200, response.content[:200]


def _worker_samples(port: int) -> dict[tuple[str, str], float]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {(sample.name, sample.labels.get("task", "")): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def _rule(name: str) -> dict[str, Any]:
    [rule] = [rule for group in _yaml("prometheus/alerts.yml")["groups"] for rule in group["rules"]
              if rule["alert"] == name]
    return rule


@pytest.mark.django_db(transaction=True)
def test_a_periodic_task_that_fails_is_served_as_the_rule_reads_it(tmp_path: Path) -> None:
    # Given a worker that consumes the periodic tasks' queue, serving its metrics on a port, and a
    # job whose worker vanished that PostgreSQL refuses to update: the abandoned-job rule raises
    port, directory = free_port(), tmp_path / "metrics"
    directory.mkdir()
    queue = f"house-{port}"  # the task is sent here, where only this worker takes it
    env = worker_env(PROMETHEUS_MULTIPROC_DIR=str(directory), METRICS_PORT=str(port), METRICS_ADDRESS="127.0.0.1")
    owner = client_create(name="periodic-failing")
    job_type = job_type_get(HELLO)
    stale = timezone.now() - timedelta(seconds=settings.CELERY_BROKER_VISIBILITY_TIMEOUT_SECONDS
                                       + len(job_type.steps) * job_type.time_limit_seconds + 120)
    with transaction.atomic():
        job = Job.objects.create(owner=owner, job_name=HELLO, status=Job.Status.STARTED, started_at=stale,
                                 dispatched_at=stale)
        updates_refused(job, name="test_stale_refused")
    process, _ = start_worker(log_dir=tmp_path, queues=f"{settings.MAINTENANCE_QUEUE},{queue}", env=env)
    try:
        started = time.time()
        task = "jobs.fail_abandoned"

        # When the rule runs and raises
        celery_app.send_task(task, queue=queue)
        deadline = time.monotonic() + 30
        while (samples := _worker_samples(port)).get(("jobapi_periodic_task_failures_total", task), 0) < 1:
            assert time.monotonic() < deadline, samples
            time.sleep(0.2)

        # Then the worker serves every series the PeriodicTaskFailing rule reads: each task's
        # interval (beat's schedule), and its last success, still the worker's start
        expr = _rule("PeriodicTaskFailing")["expr"]
        assert set(METRIC.findall(expr)) <= {name for name, _ in samples}
        for name in settings.CELERY_BEAT_SCHEDULE.values():
            assert samples[("jobapi_periodic_task_last_success_timestamp_seconds", name["task"])] > 0
            assert ("jobapi_periodic_task_interval_seconds", name["task"]) in samples
        assert samples[("jobapi_periodic_task_interval_seconds", task)] == settings.JOB_DISPATCH_SWEEP_SECONDS
        failed_since = samples[("jobapi_periodic_task_last_success_timestamp_seconds", task)]
        assert failed_since <= started

        # ...until the row is mended: the next run runs to its end, fails the job, and its last
        # success is then
        updates_refused_dropped(Job, name="test_stale_refused")
        mended = time.time()
        celery_app.send_task(task, queue=queue)
        while (samples := _worker_samples(port)).get(("jobapi_periodic_task_runs_total", task), 0) < 1:
            assert time.monotonic() < deadline + 30, samples
            time.sleep(0.2)
        assert samples[("jobapi_periodic_task_last_success_timestamp_seconds", task)] >= mended
        http = BrowserClient(HTTP_AUTHORIZATION=f"Bearer {api_key_create(client=owner)}")
        assert http.get(f"/api/jobs/{job.id}/").json()["status"] == "FAILURE"
    finally:
        stop_process(process)
        updates_refused_dropped(Job, name="test_stale_refused")
