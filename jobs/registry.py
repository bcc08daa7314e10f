"""The job-type registry: only the types named here run, and each declares how it is validated
and run (`jobs.types.base.JobType`)."""
from __future__ import annotations

from core.errors import ApplicationError
from jobs.types import checklist, hello_world, long_running, save_result
from jobs.types.base import JobType

REGISTRY: dict[str, JobType] = {
    job_type.name: job_type
    for job_type in (
        hello_world.JOB_TYPE,
        long_running.JOB_TYPE,
        save_result.JOB_TYPE,
        checklist.JOB_TYPE,
    )
}


class UnknownJobType(ApplicationError):
    code = "unknown_job_name"


def job_type_get(name: str) -> JobType:
    """The registered type called `name`; a clear 400 naming the valid ones otherwise."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        valid = sorted(REGISTRY)
        raise UnknownJobType(
            f"Unknown job_name {name!r}; valid job names: {', '.join(valid)}.",
            details={"valid_job_names": valid},
        ) from None


def job_type_known(name: str) -> bool:
    """Whether `name` is a registered type: a job of a type a deploy removed or renamed is not."""
    return name in REGISTRY


def job_types_all() -> list[JobType]:
    return list(REGISTRY.values())
