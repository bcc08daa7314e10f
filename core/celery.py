"""The Celery application; its configuration is the `CELERY_` namespace of the Django settings."""
import gc
import logging
import os
from typing import Any

from celery import Celery
from celery.app.defaults import SETTING_KEYS
from celery.signals import (
    before_task_publish,
    celeryd_init,
    task_postrun,
    task_prerun,
    task_retry,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutting_down,
)
from django.conf import settings
from django.db import DatabaseError
from kombu import Connection

from core.broker import FilesystemTransport
from core.connections import connections_released, connections_reused
from core.log_database_errors import first_line
from core.logs import (
    task_context_bind,
    task_context_clear,
    task_context_publish,
)
from core.metrics import (
    periodic_task_ended,
    periodic_tasks_awaited,
    worker_process_exited,
    worker_serve,
)
from core.soft_stop import soft_stop_install

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")

logger = logging.getLogger(__name__)

app = Celery("jobapi")


@app.on_configure.connect
def _configure(sender: Celery, **kwargs: Any) -> None:
    """Configure Celery from the `CELERY_` Django settings, copied into a dict when Celery first
    reads its configuration (Django's settings are loaded by then, and do not change after).

    Celery's documented `config_from_object("django.conf:settings", namespace="CELERY")` goes
    to Django's lazy settings object on every look-up, trying up to four spellings of a name
    before it reaches Celery's default: a sixth of a publish's CPU; from a dict the look-ups
    cost a few microseconds (docs/benchmarks.md, "Fixes").
    """
    names = [name for name in dir(settings) if name.startswith("CELERY_")]
    sender.config_from_object({name: getattr(settings, name) for name in names}, namespace="CELERY")


@app.on_after_configure.connect
def _deprecations_checked(sender: Celery, **kwargs: Any) -> None:
    """Celery counts a setting deprecated when its name is one of Celery 3's, even when it is the
    `CELERY_` namespace's spelling of a current one (`CELERY_RESULT_BACKEND` for
    `result_backend`; celery/celery#7140), and a worker warned at every start about five of ours,
    then asked for `celery upgrade settings`. Only names that are no current setting's stay."""
    sender.conf.deprecated_settings = {
        name for name in sender.conf.deprecated_settings or ()
        if name.removeprefix("CELERY_").lower() not in SETTING_KEYS
    }


app.autodiscover_tasks()


def broker_connection_ensure(connection: Connection) -> None:
    """Connect `connection` for a look at the broker, /readyz's or the
    console's, within the bounds CELERY_BROKER_CONNECTION_TIMEOUT sets its connect and socket
    timeouts to; raises when the broker does not answer. A connection refused at once is tried
    again that long after; one that took that long is not (a fixed 2 s, against a shorter
    setting, overran the bounds: a hung broker was asked twice, 3 s in all at 0.5 s)."""
    wait = settings.CELERY_BROKER_CONNECTION_TIMEOUT
    connection.ensure_connection(max_retries=1, interval_start=wait, timeout=wait)


@celeryd_init.connect
def _worker_configure(conf: Any, **kwargs: Any) -> None:
    """A worker starting (before it connects to the broker) takes its own transport options,
    the longer socket timeout (WORKER_BROKER_TRANSPORT_OPTIONS says why); the API and beat
    keep CELERY_BROKER_TRANSPORT_OPTIONS'.

    And it tries to reach a broker that went away for as long as it is away (every 30 s after
    the first few tries), as docs/deployment.md promises ("the workers reconnect"): under
    Celery's 100 tries, a Redis down for about 46 minutes made every worker exit at once
    (`Unrecoverable error: OperationalError(...)`, CRITICAL), which `make run` stops everything
    for and a supervisor answers with workers that try 100 times again. A worker without its
    broker has nothing else to do."""
    conf.broker_transport_options = settings.WORKER_BROKER_TRANSPORT_OPTIONS
    conf.broker_connection_max_retries = None


@worker_init.connect
def _loaded_objects_frozen(**kwargs: Any) -> None:
    """The worker is loaded, its pool not yet forked: what it loaded (Django, DRF, Celery) is left
    out of the garbage collector's walks from now on, as Python's documentation advises before a
    fork (gc.freeze), and as the API's processes do (gunicorn.conf.py). The pool processes then
    share those pages instead of copying them as a collection touches them, and the main
    process no longer walks them in the collections it makes as it exits: 1-2 s of CPU at every
    stop, the most of the worker's stop after it stopped waiting (core/broker.py)."""
    gc.freeze()


@worker_shutting_down.connect
def _broker_wait_ended(**kwargs: Any) -> None:
    """The worker's stop begins (sent from its signal handler): on the embedded broker its loop
    stops waiting for messages at the next poll instead of up to 4 s later (core/broker.py)."""
    FilesystemTransport.stopping = True


@worker_process_init.connect
def _pool_process_grouped_apart(**kwargs: Any) -> None:
    """A pool process leads a process group of its own, so a stop signalled to the worker's
    group (honcho under make run signals each process's group, as does `kill -- -PGID`) reaches
    the main process alone, as compose's init signals it alone: its warm shutdown stops the pool.
    Signalled too, every pool process died at once, mid-task, logged as an error ("Process
    'ForkPoolWorker-1' ... exited with 'signal 15 (SIGTERM)'"), and at times the main process
    then never finished stopping. (The parent's death still ends the process: Celery has the
    kernel send it SIGKILL; and a hard time limit now kills the task's subprocesses with it,
    billiard killing a group leader's whole group.)"""
    os.setpgrp()


@task_retry.connect
def _database_retry_logged(sender: Any = None, request: Any = None, reason: Any = None, **_: Any) -> None:
    """A task the database failed (its autoretry_for) runs again after a backoff: one WARNING
    line saying so, with the task's context (a job's id). Celery's own line for a retry is at
    INFO on a logger kept at WARNING (core/logs.py), so a PostgreSQL restart under a running job,
    or under a delivery, left none. The error's first line only: PostgreSQL's DETAIL and CONTEXT
    may quote a client's values (a key, a job's output). A job's step says which (its `index`
    argument), as a job's other lines do."""
    error = getattr(reason, "exc", None)
    if request is None or not isinstance(error, DatabaseError):
        return
    step = (request.kwargs or {}).get("index")
    logger.warning("Task %s%s: the database failed (%s); it runs again in %s s (retry %s of %s)",
                   sender.name, "" if step is None else f" step {step}", first_line(error), reason.when,
                   request.retries + 1, sender.max_retries)


# Around each task, what the API does around each request: keep a persistent connection for
# CONN_MAX_AGE, close it when it is too old or saw an error, and check it before a task uses it
# after a pause. (CELERY_DB_REUSE_MAX stops Celery from closing it after every task instead.)
task_prerun.connect(connections_reused)
task_postrun.connect(connections_released)


# The log context a task inherits from whoever published it (core/logs.py).
before_task_publish.connect(task_context_publish)
task_prerun.connect(task_context_bind)
task_postrun.connect(task_context_clear)
# Each worker serves its own metrics; a pool process's end is noted, and a periodic task's run
# counted, as having run to its end or not (core/metrics.py).
worker_ready.connect(worker_serve)
worker_ready.connect(periodic_tasks_awaited)
worker_process_shutdown.connect(worker_process_exited)
task_postrun.connect(periodic_task_ended)
# A job worker's soft stop ends once its running jobs do (core/soft_stop.py).
worker_ready.connect(soft_stop_install)
