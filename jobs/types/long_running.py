"""`api.tasks.long_running_task`: sleeps in steps, reporting progress; cancelable while it runs."""
import math
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jobs.types.base import LONG_JOBS_QUEUE, JobType, StepContext

MAX_DURATION_SECONDS = 3600
# How often the job reports progress and looks at its cancel flag.
TICK_SECONDS = 1.0


class LongRunningPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, title="LongRunningPayload")

    duration: float = Field(ge=0, le=MAX_DURATION_SECONDS, description="Seconds to sleep, 0 to 3600.")
    message: str = Field(default="", max_length=10_000, description="Echoed in the result.")


def sleep_in_steps(ctx: StepContext, previous: Any) -> str:
    payload = LongRunningPayload.model_validate(ctx.payload)
    total = max(1, math.ceil(payload.duration / TICK_SECONDS))
    deadline = time.monotonic() + payload.duration
    for tick in range(total):
        ctx.check_canceled()
        ctx.progress(tick, total, f"slept {tick * TICK_SECONDS:g} of {payload.duration:g} s")
        time.sleep(max(0.0, min(TICK_SECONDS, deadline - time.monotonic())))
    ctx.check_canceled()
    ctx.progress(total, total, "done")
    # The starter echoed the number as sent (2, not 2.0).
    return f"Slept for {ctx.payload['duration']} seconds. Message: {payload.message}"


JOB_TYPE = JobType(
    name="api.tasks.long_running_task",
    description="Sleeps `duration` seconds in one-second steps, reporting progress; cancelable.",
    payload_model=LongRunningPayload,
    steps=(sleep_in_steps,),
    soft_time_limit_seconds=MAX_DURATION_SECONDS + 60,
    time_limit_seconds=MAX_DURATION_SECONDS + 120,
    queue=LONG_JOBS_QUEUE,
)
