"""docker-compose.yaml and the Dockerfile, checked statically (no Docker engine needed)."""
from __future__ import annotations

import os
import re
import runpy
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings

from jobs.registry import job_types_all
from tests.conftest import REPO

# Services running the official images, which start as root to drop to their own user.
OFFICIAL_IMAGES = {"db", "redis"}
APP_SERVICES = {"web", "worker", "worker-long", "deliveries", "beat"}
# The monitoring profile's services: Prometheus's and Grafana's own images.
MONITORING = {"prometheus", "grafana"}
WORKERS = ("worker", "worker-long", "deliveries")
# Where the Dockerfile copies the repository.
IMAGE_ROOT = "/app/"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yaml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def repo_path(image_path: str) -> Path:
    assert image_path.startswith(IMAGE_ROOT), f"{image_path} is not in the image's copy of the repo"
    return REPO / image_path.removeprefix(IMAGE_ROOT)


def as_list(value: str | list[str]) -> list[str]:
    return value.split() if isinstance(value, str) else value


def test_the_services_of_the_deployment(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == OFFICIAL_IMAGES | APP_SERVICES | MONITORING | {"migrate", "flower"}


def test_every_command_is_an_executable_script_in_the_repo(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if name in OFFICIAL_IMAGES | MONITORING:
            continue
        assert "build" in service, f"{name} must run this repository's image"
        assert "entrypoint" not in service, f"{name}: the image has no entrypoint to replace"
        script = repo_path(as_list(service["command"])[0])
        assert script.is_file() and os.access(script, os.X_OK), f"{name}: {script} is not an executable script"


def test_every_health_check_command_exists(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        test = service.get("healthcheck", {}).get("test")
        if name in OFFICIAL_IMAGES | MONITORING or not test:
            continue
        assert test[0] == "CMD" and test[1] == "python", name
        assert repo_path(test[2]).is_file(), name


def test_db_redis_web_and_workers_have_health_checks(services: dict[str, dict[str, Any]]) -> None:
    for name in ("db", "redis", "web", "worker", "worker-long", "deliveries"):
        check = services[name].get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} needs a health check"


def test_one_shot_and_portless_services_opt_out_of_the_images_web_check(
    services: dict[str, dict[str, Any]],
) -> None:
    """The image's HEALTHCHECK probes gunicorn; a container without one must not inherit it."""
    for name in ("migrate", "beat", "flower"):
        assert services[name]["healthcheck"] == {"disable": True}, name


def test_services_start_when_what_they_need_is_ready(services: dict[str, dict[str, Any]]) -> None:
    for name in APP_SERVICES:
        assert services[name]["depends_on"] == {
            "db": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }, name
    assert services["migrate"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert services["migrate"]["restart"] == "no"
    assert services["flower"]["depends_on"] == {"redis": {"condition": "service_healthy"}}


def test_the_one_env_file_reaches_only_the_services_that_read_it(services: dict[str, dict[str, Any]]) -> None:
    # The service's own containers, and PostgreSQL (POSTGRES_USER, _PASSWORD, _DB, as the API reads them)
    for name in APP_SERVICES | {"migrate", "flower", "db"}:
        assert services[name].get("env_file") in (".env", [".env"]), name
    # Redis, Prometheus and Grafana read none of it, and no secret of it reaches them: Grafana's
    # admin password alone, by its own name (Prometheus's token is a compose secret, a file)
    for name in {"redis"} | MONITORING:
        assert "env_file" not in services[name], name
        handed = " ".join(str(value) for value in services[name].get("environment", {}).values())
        for secret in ("SECRET_KEY", "POSTGRES_PASSWORD", "OPENAI_API_KEY", "METRICS_TOKEN"):
            assert secret not in handed, (name, secret)


def test_only_web_publishes_a_port_and_flower_only_on_loopback_under_its_profile(
    services: dict[str, dict[str, Any]],
) -> None:
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"web", "flower", "grafana"}
    assert services["web"]["ports"] == ["${WEB_PUBLISH_ADDRESS:-127.0.0.1}:${WEB_PUBLISH_PORT:-8000}:8000"]
    assert services["flower"]["ports"] == ["127.0.0.1:5555:5555"]
    assert services["grafana"]["ports"] == ["127.0.0.1:${GRAFANA_PUBLISH_PORT:-3000}:3000"]
    assert services["flower"]["profiles"] == ["flower"]
    assert all(services[name]["profiles"] == ["monitoring"] for name in MONITORING)
    assert all("profiles" not in services[name] for name in services if name not in MONITORING | {"flower"})


def test_web_listens_on_every_interface_inside_its_container(services: dict[str, dict[str, Any]]) -> None:
    assert services["web"]["environment"]["HOST"] == "0.0.0.0"
    assert services["web"]["environment"]["PORT"] == "8000"


def test_the_workers_consume_the_queues_tasks_are_routed_to(services: dict[str, dict[str, Any]]) -> None:
    routed = {settings.CELERY_TASK_DEFAULT_QUEUE} | {
        route["queue"] for route in settings.CELERY_TASK_ROUTES.values()
    } | {job_type.queue for job_type in job_types_all()}

    consumed = {
        queue for name in ("worker", "worker-long", "deliveries")
        for queue in services[name]["environment"]["QUEUES"].split(",")
    }

    assert consumed == routed == {"jobs", "jobs_long", "webhooks", "maintenance"}
    assert services["deliveries"]["command"] == services["worker-long"]["command"] == services["worker"]["command"]


def test_beat_is_a_single_unscaled_service(services: dict[str, dict[str, Any]]) -> None:
    assert "deploy" not in services["beat"] and "scale" not in services["beat"]


def test_state_lives_in_named_volumes_and_redis_persists(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["db"]["volumes"] == ["pgdata:/var/lib/postgresql/data"]
    assert services["redis"]["volumes"] == ["redisdata:/data"]
    assert set(compose["volumes"]) == {"pgdata", "redisdata", "prometheusdata", "grafanadata", "beatschedule"}
    command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in command


def test_beats_schedule_outlives_its_container(services: dict[str, dict[str, Any]]) -> None:
    # A recreated beat with an empty schedule runs an hourly task an hour after it starts: a
    # deployment redeployed more often than that would never prune.
    [data_dir] = [
        arguments.split("=", 1)[1].split()[0]
        for keyword, arguments in dockerfile_instructions() if keyword == "ENV" and "DATA_DIR=" in arguments
    ]
    assert services["beat"]["volumes"] == [f"beatschedule:{data_dir}"]
    assert "BEAT_SCHEDULE_FILE" not in services["beat"].get("environment", {})


def test_nothing_runs_as_root_that_need_not(services: dict[str, dict[str, Any]]) -> None:
    users = [arguments for keyword, arguments in dockerfile_instructions() if keyword == "USER"]
    assert users, "the image must switch to a non-root USER"
    assert users[-1].split(":")[0] not in {"root", "0"}
    for name, service in services.items():
        assert str(service.get("user", "")).split(":")[0] not in {"root", "0"}, name
        assert not service.get("privileged"), name
        if name not in OFFICIAL_IMAGES:  # the monitoring images run as their own users too
            assert service["cap_drop"] == ["ALL"], name
            assert "no-new-privileges:true" in service["security_opt"], name


def test_the_image_is_slim_python_311_with_dependencies_in_their_own_layer() -> None:
    instructions = dockerfile_instructions()
    keywords = [keyword for keyword, _ in instructions]
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", instructions[keywords.index("FROM")][1])

    copies = [arguments for keyword, arguments in instructions if keyword == "COPY"]
    requirements_copy = next(i for i, c in enumerate(copies) if "requirements/production.txt" in c)
    source_copy = next(i for i, c in enumerate(copies) if c.split()[0] == ".")
    assert requirements_copy < source_copy, "dependencies must install before the code is copied"
    runs = [arguments for keyword, arguments in instructions if keyword == "RUN"]
    assert any("pip install -r /app/requirements/production.txt" in run for run in runs)


def test_the_image_collects_static_files_without_baking_in_a_secret() -> None:
    instructions = dockerfile_instructions()
    collect = next(a for k, a in instructions if k == "RUN" and "collectstatic" in a)
    assert "SECRET_KEY=" in collect, "the placeholder key is scoped to the collectstatic step"
    for keyword, arguments in instructions:
        if keyword in {"ENV", "ARG", "LABEL"}:
            assert not re.search(r"SECRET|PASSWORD|API_KEY|TOKEN", arguments), arguments


def test_the_image_checks_its_health_with_python_against_healthz() -> None:
    healthcheck = next(a for k, a in dockerfile_instructions() if k == "HEALTHCHECK")
    assert 'CMD ["python", "/app/scripts/healthcheck", "web"]' in healthcheck
    assert '"/healthz"' in (REPO / "scripts" / "healthcheck").read_text()
    cmd = next(a for k, a in dockerfile_instructions() if k == "CMD")
    assert cmd == '["/app/scripts/web"]'


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_build() -> None:
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".env", ".git", ".venv", "var", "staticfiles"} <= ignored


def test_web_may_finish_requests_in_flight_before_it_is_killed(services: dict[str, dict[str, Any]]) -> None:
    # Run as gunicorn loads it: a module of its own, with its __file__ (it reads its default
    # threads from beside itself, core/web_defaults.py).
    config = runpy.run_path(str(REPO / "gunicorn.conf.py"))

    grace = services["web"]["stop_grace_period"]

    assert grace.endswith("s") and int(grace[:-1]) > config["graceful_timeout"]


def test_deliveries_run_on_threads_and_jobs_on_processes(services: dict[str, dict[str, Any]]) -> None:
    # Deliveries wait on receivers and bound each attempt themselves (core/deadlines.py); jobs
    # rely on Celery's time limits, which need processes to kill.
    assert services["deliveries"]["environment"]["WORKER_POOL"] == "threads"
    assert "WORKER_POOL" not in services["worker"]["environment"]
    assert "WORKER_POOL" not in services["worker-long"]["environment"]
    procfile = (REPO / "Procfile").read_text()
    assert "deliveries: QUEUES=webhooks,maintenance WORKER_POOL=threads" in procfile


def test_every_process_works_out_the_same_running_cap(services: dict[str, dict[str, Any]]) -> None:
    # The running cap's default comes from WORKER_CONCURRENCY in every process (the sweeper's,
    # the API's, each worker's): a worker overriding it for its own process count made the
    # long-jobs worker refuse, every sweep, the jobs the sweeper published under a larger cap.
    cap_inputs = {"WORKER_CONCURRENCY", "JOB_MAX_RUNNING_PER_CLIENT"}
    for name, service in services.items():
        assert not cap_inputs & set(service.get("environment", {})), name
    for line in (REPO / "Procfile").read_text().splitlines():
        assert not any(f"{variable}=" in line for variable in cap_inputs), line
    assert services["worker-long"]["environment"]["WORKER_PROCESSES"] == "${LONG_WORKER_CONCURRENCY:-1}"
