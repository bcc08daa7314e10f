"""The Celery application; its configuration is the `CELERY_` namespace of the Django settings."""
import os
import threading
import time
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


# When a task ended less than this long ago, the next one does not health-check the connection
# again: busy workers ran a `SELECT 1` round trip before every task, two on a job's way to its
# webhook (docs/benchmarks.md). An idle connection is still checked. One that broke within the
# second fails its task's first query: the job and delivery tasks retry a DatabaseError, and
# the periodic ones run again at their next tick.
HEALTH_CHECK_AFTER_IDLE_SECONDS = 1.0

_last_task = threading.local()


@task_prerun.connect
def _database_connections_checked(**kwargs: Any) -> None:
    """Before each task, what Django does before each request: keep a persistent connection for
    CONN_MAX_AGE, close it when it is too old or saw an error, health-check it before reuse
    unless a task used it within HEALTH_CHECK_AFTER_IDLE_SECONDS. (CELERY_DB_REUSE_MAX stops
    Celery from closing it after every task instead.)"""
    from django.db import close_old_connections, connections

    close_old_connections()
    ended = getattr(_last_task, "ended", None)
    if ended is not None and time.monotonic() - ended < HEALTH_CHECK_AFTER_IDLE_SECONDS:
        for connection in connections.all(initialized_only=True):
            if connection.connection is not None:
                # Django's own mark for "checked since the request began" (an attribute of its
                # database wrappers since 4.1, not a documented API).
                connection.health_check_done = True


@task_postrun.connect
def _database_connections_released(**kwargs: Any) -> None:
    """After each task: close a connection that is too old or saw an error."""
    from django.db import close_old_connections

    close_old_connections()
    _last_task.ended = time.monotonic()
