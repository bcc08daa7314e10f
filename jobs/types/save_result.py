"""`api.tasks.save_task_result_test_task`: persists its payload as a result and returns it."""
from typing import Any

from pydantic import BaseModel, ConfigDict

from jobs.types.base import JobType, StepContext


class SaveResultPayload(BaseModel):
    """Any JSON object; it becomes the persisted result as given."""

    model_config = ConfigDict(extra="allow", title="SaveResultPayload")


def echo(ctx: StepContext, previous: Any) -> dict[str, Any]:
    return ctx.payload


JOB_TYPE = JobType(
    name="api.tasks.save_task_result_test_task",
    description="Persists its payload as a result (see /api/results/) and returns it.",
    payload_model=SaveResultPayload,
    steps=(echo,),
    soft_time_limit_seconds=10,
    time_limit_seconds=20,
    persist_result=True,
)
