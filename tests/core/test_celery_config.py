"""The Celery app takes its configuration from the `CELERY_` Django settings (core/celery.py)."""
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
