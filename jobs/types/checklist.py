"""`api.tasks.generate_checklist_from_guidelines`: guidelines in, a checklist out, via a model."""
from typing import Any

from django.conf import settings
from pydantic import BaseModel, ConfigDict, Field

from jobs.registry import JobType
from jobs.runtime import JobFailed, StepContext

MAX_GUIDELINES_CHARS = 100_000


class ChecklistPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, title="ChecklistPayload")

    guidelines: str = Field(
        min_length=1,
        max_length=MAX_GUIDELINES_CHARS,
        pattern=r"\S",
        description=f"The guidelines text, 1 to {MAX_GUIDELINES_CHARS} characters.",
    )


def unavailable_reason() -> str | None:
    if not settings.OPENAI_API_KEY and not settings.OPENAI_BASE_URL:
        return "OPENAI_API_KEY is not set (nor OPENAI_BASE_URL), so no model can be called."
    return None


def summarise(ctx: StepContext, previous: Any) -> Any:
    raise JobFailed("not_implemented", "The checklist steps are not implemented yet.")


JOB_TYPE = JobType(
    name="api.tasks.generate_checklist_from_guidelines",
    description="Summarises guidelines, then turns the summary into a checklist, with a model.",
    payload_model=ChecklistPayload,
    steps=(summarise,),
    soft_time_limit_seconds=300,
    time_limit_seconds=330,
    persist_result=True,
    unavailable_reason=unavailable_reason,
)
