"""App config for jobs: the job model, the job-type registry and running jobs."""
from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"

    def ready(self) -> None:
        # Load the registry and the job types' own imports (the openai client alone takes
        # about 1.3 s) while the process starts, once the app registry is ready (a job type may
        # use models): otherwise the first submission served by each gunicorn worker and the
        # first job run by each Celery pool process stall for that long (docs/benchmarks.md,
        # "cold start"). The checks of the settings against the job types import them.
        import jobs.checks

        # Connects the stop of a client's deliveries to core's client_deletion_started.
        import jobs.deletion  # noqa: F401
