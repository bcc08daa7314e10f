"""What a job type is: its declaration (`JobType`), what its steps see (`StepContext`), and the
two ways a step ends a job early (`JobCanceled`, `JobFailed`).

Job types import this module and nothing else of `jobs`, so the registry can import the types
and the runner can import the registry without a cycle.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pydantic

# The Celery queues job steps run on: long types have their own, so however many of them run or
# wait, the `jobs` worker's processes stay free for short jobs (README, "Scaling").
JOBS_QUEUE = "jobs"
LONG_JOBS_QUEUE = "jobs_long"
# The largest payload a type accepts unless it declares its own, in bytes of compact JSON.
DEFAULT_MAX_PAYLOAD_BYTES = 64 * 1024

# A step takes the running job's context and the previous step's output (None for the first)
# and returns its own output; the last step's output is the job's result.
Step = Callable[["StepContext", Any], Any]


class JobCanceled(Exception):
    """Raised by `StepContext.check_canceled` when the job was canceled while it ran."""


class JobFailed(Exception):
    """Raised by job code to fail the job with a chosen `error.type` and message. `retryable`:
    whether another run may do better (the job's retry policy applies); False for a failure
    that the job's own input makes certain, which every run would meet again."""

    def __init__(self, error_type: str, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.retryable = retryable


@dataclass
class StepContext:
    """What a running step sees: its payload, a progress reporter and the cancel check.

    The runner (`jobs.tasks`) supplies the callables: the first three write to the job's row,
    the last two read and add to its owner's model usage of the day (jobs/model_budget.py).
    """

    job_id: uuid.UUID
    # The job's client: the model provider's breakers are kept per client too (checklist_breaker.py).
    owner_id: uuid.UUID
    payload: dict[str, Any]
    step_index: int
    step_count: int
    report_progress: Callable[[int, int, str], None]
    cancel_requested: Callable[[], bool]
    mark_retrying: Callable[[bool], None]
    require_model_budget: Callable[[], None]
    record_model_usage: Callable[[int], None]

    def progress(self, current: int, total: int, message: str = "") -> None:
        self.report_progress(current, total, message)

    def check_canceled(self) -> None:
        if self.cancel_requested():
            raise JobCanceled()

    def retrying(self, retrying: bool) -> None:
        """Mark the job RETRY while a step waits to retry a transient failure, STARTED after."""
        self.mark_retrying(retrying)

    def before_model_call(self) -> None:
        """Raises JobFailed (`model_budget_exhausted`) when the job's owner has spent its model
        budget for the day: the call is not made."""
        self.require_model_budget()

    def after_model_call(self, tokens: int) -> None:
        """Counts a model call's tokens (its `usage.total_tokens`) against the owner's budget."""
        self.record_model_usage(tokens)


def always_available() -> str | None:
    return None


@dataclass(frozen=True)
class RetryLimits:
    """What a retryable type lets a job's retry policy ask: runs in all, and the longest wait
    between a failure and the next run."""

    max_attempts: int
    max_backoff_seconds: int


@dataclass(frozen=True)
class JobType:
    name: str
    description: str
    # Validates the payload at submission; its JSON Schema is published by /api/job-types/.
    payload_model: type[pydantic.BaseModel]
    # Run in order as a Celery chain, one task per step.
    steps: tuple[Step, ...]
    # Per step: the soft limit raises inside the job (it fails cleanly), the hard one kills it.
    soft_time_limit_seconds: int = 60
    time_limit_seconds: int = 90
    # Whether a successful result is also kept as a persisted result (/api/results/).
    persist_result: bool = False
    # The Celery queue its steps run on (LONG_JOBS_QUEUE for types that run for minutes or more).
    queue: str = JOBS_QUEUE
    # The largest payload accepted, in bytes of compact UTF-8 JSON (413 above it).
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    # Whether a failed job may run again, and within what (a submission's `retry` policy).
    retry_limits: RetryLimits | None = None
    # Whether its steps call a model: its submissions are refused once the owner's daily model
    # budget is spent (MODEL_TOKENS_PER_CLIENT_PER_DAY), other types' cost no check.
    uses_model: bool = False
    # Returns why the type cannot run right now (missing configuration), or None.
    unavailable_reason: Callable[[], str | None] = field(default=always_available)

    def payload_schema(self) -> dict[str, Any]:
        return self.payload_model.model_json_schema()
