"""System checks of the settings against the job types (`manage.py check`, and `migrate`, which
compose runs before the service starts)."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks

from jobs.registry import job_types_all


@checks.register()
def visibility_timeout_check(**kwargs: Any) -> list[checks.CheckMessage]:
    """Redis hands a message nobody acknowledged within its visibility timeout to another worker.
    A step's message stays unacknowledged while it runs (acknowledged late), up to its hard time
    limit, and a retry's while it waits out its backoff first, if that is within a sweep (a longer
    one waits on the job's row: jobs.transitions.job_retry_later): a shorter timeout has a second
    worker run the job at the same time as the first."""
    if not settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        return []  # RabbitMQ has its consumer_timeout instead (docs/reliability.md)
    timeout = settings.CELERY_BROKER_VISIBILITY_TIMEOUT_SECONDS
    held = {
        job_type.name: job_type.time_limit_seconds
        + (min(job_type.retry_limits.max_backoff_seconds, int(settings.JOB_DISPATCH_SWEEP_SECONDS))
           if job_type.retry_limits else 0)
        for job_type in job_types_all()
    }
    too_long = {name: seconds for name, seconds in held.items() if seconds > timeout}
    if not too_long:
        return []
    named = ", ".join(f"{name} ({seconds:,} s)" for name, seconds in sorted(too_long.items()))
    return [
        checks.Warning(
            f"CELERY_BROKER_VISIBILITY_TIMEOUT_SECONDS is {timeout:,} s, shorter than a message of these "
            f"job types may wait unacknowledged (its step's hard time limit, plus a retry's countdown "
            f"within a sweep): {named}. Redis would hand such a message to a second worker, which runs the job "
            "at the same time as the first.",
            hint=f"Set it to {max(held.values()):,} s or more (the default, 7,200 s, covers every job type).",
            id="jobs.W001",
        )
    ]
