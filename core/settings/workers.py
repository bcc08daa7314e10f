"""Celery (the broker, its options for a job API, the periodic tasks) and what the periodic
tasks do: the dispatch sweep, retention."""
from __future__ import annotations

from datetime import timedelta

from django.core.exceptions import ImproperlyConfigured

from core.settings.api import IDEMPOTENCY_KEY_TTL_SECONDS
from core.settings.base import CENTURY_SECONDS, DATA_DIR, env

_embedded_broker = not env("CELERY_BROKER_URL", default="")
# Where jobs and deliveries are queued; Redis (or RabbitMQ) in production.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="filesystem://localhost//")
# Celery's own result store. Jobs never need it (the Job row is the truth); set it only for tools.
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", default=None)
# Ignore task results unless a backend is configured: the Job row records outcomes.
CELERY_TASK_IGNORE_RESULT = CELERY_RESULT_BACKEND is None
# JSON only: pickle would let anyone who can write to the broker run code on the workers.
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
# Ack after the task ran, so a worker that dies mid-job leaves the message to be redelivered.
CELERY_TASK_ACKS_LATE = True
# ...and when the pool process is killed (OOM, SIGKILL), requeue instead of acking.
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# A worker that loses its broker connection lets its running jobs go on (Celery 5's default, set
# here so that it stays when Celery 6 turns it on). Their messages cannot be acked on the lost
# connection: Redis hands them out again after the visibility timeout, when each finds its job
# final or its step handed over, and runs nothing. Cancelling them instead (True) would cut off
# every running job at each Redis blip, an hour-long one too, its message back only after that
# timeout. docs/deployment.md, "Redis down". RabbitMQ hands them out again at once, so a step
# runs twice at the same time (docs/reliability.md, "Beyond one broker").
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
# One message at a time per process: an hour-long job never holds other jobs hostage in prefetch.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Jobs one client may have running at once; the rest wait, in order, without holding a worker
# (0: no cap). Default: half of a jobs worker's processes (WORKER_CONCURRENCY), rounded up.
JOB_MAX_RUNNING_PER_CLIENT = env.int(
    "JOB_MAX_RUNNING_PER_CLIENT", default=(env.int("WORKER_CONCURRENCY", default=2, minimum=1) + 1) // 2, minimum=0
)
# How far ahead a job may be scheduled (run_at), in seconds; at most a century: past year 9999,
# where Python's datetimes end, every submission with a run_at failed (an OverflowError, 500).
JOB_MAX_SCHEDULE_AHEAD_SECONDS = env.int(
    "JOB_MAX_SCHEDULE_AHEAD_SECONDS", default=30 * 24 * 3600, minimum=0, maximum=CENTURY_SECONDS
)
# Seconds a worker stopped with SIGQUIT (compose's stop_signal for the job workers) lets the
# jobs it is running go on (it exits once they have ended: core/soft_stop.py) before it cuts
# them off and hands their messages back to the broker, at once, for the next worker (0,
# Celery's default: cut off at once). Below compose's
# stop_grace_period: a worker Docker kills leaves its jobs' messages to the visibility timeout.
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT = env.float("WORKER_SOFT_SHUTDOWN_SECONDS", default=0.0, minimum=0)
# Default time limits, in seconds; job types declare their own.
CELERY_TASK_SOFT_TIME_LIMIT = 300
CELERY_TASK_TIME_LIMIT = 330
# Publishing must not hang a request while the broker is down: fail fast, the sweeper retries.
CELERY_TASK_PUBLISH_RETRY = False
# How long the API waits for the broker (seconds), to take a connection or to answer on it (the
# socket timeout below), before a publish gives up and leaves its job to the sweeper.
CELERY_BROKER_CONNECTION_TIMEOUT = env.float("CELERY_BROKER_CONNECTION_TIMEOUT", default=2.0, above=0)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Redeliver an unacked message only after the longest job could have finished (seconds).
# Shorter and Redis would hand a running hour-long job to a second worker.
CELERY_BROKER_VISIBILITY_TIMEOUT_SECONDS = env.int(
    "CELERY_BROKER_VISIBILITY_TIMEOUT_SECONDS", default=2 * 3600, minimum=1, maximum=CENTURY_SECONDS
)
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
    "visibility_timeout": CELERY_BROKER_VISIBILITY_TIMEOUT_SECONDS,
    "socket_connect_timeout": CELERY_BROKER_CONNECTION_TIMEOUT,
    # Redis: how long a call waits for its answer outside the workers (the API, beat): 10 s held a
    # submission, and its process's request turn, that long while the broker took connections
    # and never answered (hung; docs/reliability.md, 3). Not below the connection timeout: kombu
    # connects again until that has passed, so a shorter one waits longer in all (1 s: 4 s).
    "socket_timeout": CELERY_BROKER_CONNECTION_TIMEOUT,
    # Redis: look for expired unacked messages every 10 s (kombu's default scans only every 10th
    # 10 s tick, which left a killed worker's job waiting up to 100 s past the timeout).
    "unacked_restore_throttle": 1,
}
if CELERY_BROKER_URL.startswith("redis://"):
    # kombu's Redis transport, less a client object built per publish (core/broker.py).
    CELERY_BROKER_TRANSPORT = "core.broker:Transport"
if env("CELERY_BROKER_KEY_PREFIX", default=""):
    # Lets several test runs share one Redis without seeing each other's queues.
    CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] = env("CELERY_BROKER_KEY_PREFIX")
if _embedded_broker:
    _broker_dir = DATA_DIR / "broker"
    for _sub in ("queue", "processed"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "store_processed": False,
        "control_folder": str(_broker_dir / "control"),
        # Seconds between two looks for a message: how soon a job starts, and a worker's stop
        # begins (core/broker.py); kombu's 1 s default was a second of each.
        "polling_interval": 0.1,
    }
    CELERY_BROKER_TRANSPORT = "core.broker:FilesystemTransport"
# A worker's own (core/celery.py sets them as it starts): a longer socket timeout. A publish
# that fails there (a job's next step) frees no request, and is left to the sweeper's next run
# (jobs.tasks hands the step over on the job's row): a broker slow to answer is better waited for.
WORKER_BROKER_TRANSPORT_OPTIONS = (
    CELERY_BROKER_TRANSPORT_OPTIONS if _embedded_broker else {**CELERY_BROKER_TRANSPORT_OPTIONS, "socket_timeout": 10}
)
CELERY_TASK_DEFAULT_QUEUE = "jobs"
# The periodic and dispatching tasks have a queue of their own, consumed by the deliveries worker
# (its tasks are short): a backlog of jobs, or every job process busy for an hour, never delays
# the sweeper, the deadlines or the webhook dispatcher. Listed before the catch-all below.
MAINTENANCE_QUEUE = "maintenance"
CELERY_TASK_ROUTES = {
    **{
        name: {"queue": MAINTENANCE_QUEUE}
        for name in (
            "jobs.dispatch_sweep", "jobs.dispatch_owner", "jobs.enforce_deadlines", "jobs.fail_abandoned",
            "jobs.prune", "webhooks.deliveries_dispatch_due", "webhooks.prune",
        )
    },
    "webhooks.*": {"queue": "webhooks"},
}
# Longest sleep (seconds) of a worker's timer thread, which a worker with no event loop (the
# embedded broker's) runs and waits for as it stops: Celery's 1 s default was a second of each stop.
CELERY_WORKER_TIMER_PRECISION = 0.1
# Don't hijack the root logger: the worker logs as configured below.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Celery's Django fixup closes the database connection before and after every task unless
# this is set, so every task paid a new PostgreSQL connection (docs/benchmarks.md); with it the
# fixup leaves them open and core/celery.py applies Django's own policy (DB_CONN_MAX_AGE, the
# health check, closing a connection that saw an error) at each task, as for each request.
CELERY_DB_REUSE_MAX = 1_000_000
# Periodic tasks (celery beat).
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
# Its failures to send a task logged as one line a minute, not a traceback a try (core/beat.py).
CELERY_BEAT_SCHEDULER = "core.beat:Scheduler"
# How often the sweeper publishes jobs that were accepted while the broker was down (seconds); a
# retry whose backoff is longer waits on its row for it too (jobs.transitions.job_retry_later).
JOB_DISPATCH_SWEEP_SECONDS = env.float("JOB_DISPATCH_SWEEP_SECONDS", default=5.0, above=0)
# A job is swept only once it has stayed undispatched this long (seconds), so the sweeper
# never races the request that is publishing it right now.
JOB_DISPATCH_GRACE_SECONDS = env.float("JOB_DISPATCH_GRACE_SECONDS", default=2.0, minimum=0)
# A job (or a running job's next step, or retry) handed to the broker that has still not started
# this long after (seconds) is published again (its message was lost: a worker gave it up while
# PostgreSQL was down, a worker was killed between a step's hand-over and its publish, or Redis
# lost its data); its first message, should it arrive after all, does nothing. Longer than a job
# may wait in a queue behind others: a job published again loses its place in the queue.
JOB_DISPATCH_LOST_AFTER_SECONDS = env.float(
    "JOB_DISPATCH_LOST_AFTER_SECONDS", default=6 * 3600, above=0, maximum=CENTURY_SECONDS
)
# A running step's lease (seconds): its worker writes a heartbeat on the job's row a third of this
# apart, and another copy of its message (redelivered after the worker lost its broker connection)
# runs nothing while the heartbeat is younger than this; it looks again once it is older.
JOB_STEP_LEASE_SECONDS = env.float("JOB_STEP_LEASE_SECONDS", default=15.0, minimum=3, maximum=3600)
# How often the webhook dispatcher publishes delivery attempts that are due (seconds).
WEBHOOK_DISPATCH_SECONDS = env.float("WEBHOOK_DISPATCH_SECONDS", default=5.0, above=0)
# Retention, in days: finished jobs (with their idempotency keys), webhook events (with their
# deliveries and attempt log) and persisted results, which are kept longest; at most a century
# (a larger one, "keep for ever", made each prune's cut-off an OverflowError: nothing pruned).
_RETENTION_MAX_DAYS = CENTURY_SECONDS // (24 * 3600)
JOB_RETENTION_DAYS = env.int("JOB_RETENTION_DAYS", default=30, minimum=1, maximum=_RETENTION_MAX_DAYS)
WEBHOOK_EVENT_RETENTION_DAYS = env.int(
    "WEBHOOK_EVENT_RETENTION_DAYS", default=30, minimum=1, maximum=_RETENTION_MAX_DAYS
)
JOB_RESULT_RETENTION_DAYS = env.int("JOB_RESULT_RETENTION_DAYS", default=365, maximum=_RETENTION_MAX_DAYS)
if JOB_RESULT_RETENTION_DAYS < JOB_RETENTION_DAYS:
    raise ImproperlyConfigured("JOB_RESULT_RETENTION_DAYS must be >= JOB_RETENTION_DAYS.")
# An Idempotency-Key goes with its job when the job is pruned: kept longer than jobs, a repeat
# after the pruning would make its job again (a batch's, answer the jobs left).
if IDEMPOTENCY_KEY_TTL_SECONDS > JOB_RETENTION_DAYS * 24 * 3600:
    raise ImproperlyConfigured("IDEMPOTENCY_KEY_TTL_SECONDS must be at most JOB_RETENTION_DAYS in seconds.")
# How often the housekeeping task prunes what is past its retention (seconds).
HOUSEKEEPING_INTERVAL_SECONDS = env.float(
    "HOUSEKEEPING_INTERVAL_SECONDS", default=3600.0, above=0, maximum=CENTURY_SECONDS
)
CELERY_BEAT_SCHEDULE = {
    "jobs-dispatch-sweep": {
        "task": "jobs.dispatch_sweep",
        "schedule": timedelta(seconds=JOB_DISPATCH_SWEEP_SECONDS),
    },
    "jobs-enforce-deadlines": {
        "task": "jobs.enforce_deadlines",
        "schedule": timedelta(seconds=JOB_DISPATCH_SWEEP_SECONDS),
    },
    "jobs-fail-abandoned": {
        "task": "jobs.fail_abandoned",
        "schedule": timedelta(seconds=JOB_DISPATCH_SWEEP_SECONDS),
    },
    "webhooks-dispatch-due": {
        "task": "webhooks.deliveries_dispatch_due",
        "schedule": timedelta(seconds=WEBHOOK_DISPATCH_SECONDS),
    },
    "jobs-prune": {
        "task": "jobs.prune",
        "schedule": timedelta(seconds=HOUSEKEEPING_INTERVAL_SECONDS),
    },
    "webhooks-prune": {
        "task": "webhooks.prune",
        "schedule": timedelta(seconds=HOUSEKEEPING_INTERVAL_SECONDS),
    },
}

