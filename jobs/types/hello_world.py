"""`api.tasks.hello_world`: the smallest job, kept from the starter."""
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jobs.types.base import JobType, StepContext


class HelloWorldPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, title="HelloWorldPayload")

    message: str = Field(default="", max_length=10_000, description="Appended to the greeting.")


def say_hello(ctx: StepContext, previous: Any) -> str:
    payload = HelloWorldPayload.model_validate(ctx.payload)
    return f"hello world {payload.message}".rstrip()


JOB_TYPE = JobType(
    name="api.tasks.hello_world",
    description="Returns 'hello world <message>'. Useful to check the pipeline end to end.",
    payload_model=HelloWorldPayload,
    steps=(say_hello,),
    soft_time_limit_seconds=10,
    time_limit_seconds=20,
)
