"""The job-type registry: only types named here run, and each declares how it is validated and run."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pydantic

from core.errors import ApplicationError

if TYPE_CHECKING:
    from jobs.runtime import StepContext

# A step takes the running job's context and the previous step's output (None for the first)
# and returns its own output; the last step's output is the job's result.
Step = Callable[["StepContext", Any], Any]


def always_available() -> str | None:
    return None


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
    # Returns why the type cannot run right now (missing configuration), or None.
    unavailable_reason: Callable[[], str | None] = field(default=always_available)

    def payload_schema(self) -> dict[str, Any]:
        return self.payload_model.model_json_schema()


class UnknownJobType(ApplicationError):
    code = "unknown_job_name"


def job_type_get(name: str, registry: Mapping[str, JobType] | None = None) -> JobType:
    """The registered type called `name`; a clear 400 naming the valid ones otherwise."""
    if registry is None:
        from jobs.types import REGISTRY as registry
    try:
        return registry[name]
    except (KeyError, TypeError):
        valid = sorted(registry)
        raise UnknownJobType(
            f"Unknown job_name {name!r}; valid job names: {', '.join(valid)}.",
            details={"valid_job_names": valid},
        ) from None


def job_types_all() -> list[JobType]:
    from jobs.types import REGISTRY

    return list(REGISTRY.values())
