"""The console app: once the apps are ready, its config connects the Celery workers' heartbeats
and puts every metric series at zero (the job types are known by then)."""
from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    name = "console"
    verbose_name = "Operators' console"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # heartbeats connects worker_ready and worker_shutdown; both import models: not before now.
        from console import gauges, heartbeats  # noqa: F401

        gauges.series_prepare()
