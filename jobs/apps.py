"""App config for jobs: the job model, the job-type registry and running jobs."""
from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
