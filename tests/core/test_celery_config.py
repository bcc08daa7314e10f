"""The Celery app takes its configuration from the `CELERY_` Django settings (core/celery.py),
and a worker its own transport options as it starts."""
from __future__ import annotations

from django.conf import settings

from core.celery import app


def test_celery_reads_the_celery_settings_and_its_own_defaults() -> None:
    conf = app.conf

    assert conf.broker_url == settings.CELERY_BROKER_URL
    assert conf.task_acks_late is settings.CELERY_TASK_ACKS_LATE is True
    assert conf.worker_prefetch_multiplier == settings.CELERY_WORKER_PREFETCH_MULTIPLIER == 1
    assert conf.task_routes == settings.CELERY_TASK_ROUTES
    assert conf.beat_schedule.keys() == settings.CELERY_BEAT_SCHEDULE.keys()
    # Not set in Django's settings: Celery's defaults.
    assert conf.task_always_eager is False
    assert conf.task_default_exchange_type == "direct"


def test_a_worker_waits_on_the_broker_longer_than_the_api(celery_worker: str) -> None:
    # The API (this process, the live server's) waits its connection timeout for Redis's answer
    # (tests/jobs/test_api_more.py sees a submission against a hung broker give up then)
    assert app.conf.broker_transport_options["socket_timeout"] == settings.CELERY_BROKER_CONNECTION_TIMEOUT

    # and a worker, asked what it runs with, keeps its longer one
    [worker_conf] = app.control.inspect(destination=[celery_worker], timeout=10).conf(with_defaults=True).values()
    assert worker_conf["broker_transport_options"]["socket_timeout"] == 10
    assert worker_conf["broker_transport_options"]["visibility_timeout"] == settings.CELERY_BROKER_VISIBILITY_TIMEOUT_SECONDS


def test_a_worker_tries_to_reach_the_broker_again_for_as_long_as_it_is_down(celery_worker: str) -> None:
    # Celery's default, 100 tries backing off to 30 s, gave a worker about 46 minutes of a broker
    # down: then it exited ("Unrecoverable error: OperationalError(... Connection refused.)",
    # CRITICAL), every worker at once; a worker asked what it runs with now tries for ever
    [worker_conf] = app.control.inspect(destination=[celery_worker], timeout=10).conf(with_defaults=True).values()
    assert worker_conf["broker_connection_max_retries"] is None
    # while the API and beat keep Celery's default (a publish is not retried anyway)
    assert app.conf.broker_connection_max_retries == 100
