"""The Celery application; its configuration is the `CELERY_` namespace of the Django settings."""
import os
from typing import Any

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")

app = Celery("jobapi")


@app.on_configure.connect
def _configure(sender: Celery, **kwargs: Any) -> None:
    """Configure Celery from the `CELERY_` Django settings, copied into a dict when Celery first
    reads its configuration (Django's settings are loaded by then, and do not change after).

    Celery's documented `config_from_object("django.conf:settings", namespace="CELERY")` goes
    to Django's lazy settings object on every look-up, trying up to four spellings of a name
    and raising AttributeError for each miss before it reaches Celery's default: 23-32 us a
    setting, six of them per published message, a sixth of a publish's CPU. From a dict the
    same look-ups cost a few microseconds (docs/benchmarks.md).
    """
    from django.conf import settings

    names = [name for name in dir(settings) if name.startswith("CELERY_")]
    sender.config_from_object({name: getattr(settings, name) for name in names}, namespace="CELERY")


app.autodiscover_tasks()


@task_prerun.connect
def _database_connections_checked(**kwargs: Any) -> None:
    """Before each task, what Django does before each request: keep a persistent connection for
    CONN_MAX_AGE, close it when it is too old or saw an error, health-check it before reuse
    unless it was used within HEALTH_CHECK_AFTER_IDLE_SECONDS (core.db). (CELERY_DB_REUSE_MAX
    stops Celery from closing it after every task instead.)"""
    from django.db import close_old_connections

    from core.db import connections_checked_if_recent

    close_old_connections()
    connections_checked_if_recent()


@task_postrun.connect
def _database_connections_released(**kwargs: Any) -> None:
    """After each task: close a connection that is too old or saw an error."""
    from django.db import close_old_connections

    from core.db import connections_used

    close_old_connections()
    connections_used()
