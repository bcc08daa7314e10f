"""What running job code sees: its payload, a progress reporter and the cancel check."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from jobs import services


class JobCancelled(Exception):
    """Raised by `StepContext.check_cancelled` when the job was cancelled while it ran."""


class JobFailed(Exception):
    """Raised by job code to fail the job with a chosen `error.type` and message."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


@dataclass
class StepContext:
    job_id: uuid.UUID
    payload: dict[str, Any]
    step_index: int
    step_count: int

    def progress(self, current: int, total: int, message: str = "") -> None:
        services.job_progress(job_id=self.job_id, current=current, total=total, message=message)

    def check_cancelled(self) -> None:
        if services.job_cancel_requested(job_id=self.job_id):
            raise JobCancelled()

    def retrying(self, retrying: bool) -> None:
        """Mark the job RETRY while a step waits to retry a transient failure, STARTED after."""
        services.job_set_retrying(job_id=self.job_id, retrying=retrying)
