"""The built-in job types, one module each, and the registry that names them."""
from jobs.registry import JobType
from jobs.types import checklist, hello_world, long_running, save_result

REGISTRY: dict[str, JobType] = {
    job_type.name: job_type
    for job_type in (
        hello_world.JOB_TYPE,
        long_running.JOB_TYPE,
        save_result.JOB_TYPE,
        checklist.JOB_TYPE,
    )
}
