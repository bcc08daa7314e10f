"""The Celery application; its configuration is the `CELERY_` namespace of the Django settings."""
import os
from typing import Any

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")

app = Celery("jobapi")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def _database_connections_checked(**kwargs: Any) -> None:
    """Around each task, what Django does around each request: keep a persistent connection
    for CONN_MAX_AGE, close it when it is too old or saw an error, health-check it before
    reuse. (CELERY_DB_REUSE_MAX stops Celery from closing it after every task instead.)"""
    from django.db import close_old_connections

    close_old_connections()
