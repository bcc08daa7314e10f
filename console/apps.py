"""The console app: its config connects the Celery workers' heartbeats once the apps are ready."""
from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    name = "console"
    verbose_name = "Operators' console"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Connects worker_ready and worker_shutdown; it imports the models, so not before now.
        from console import heartbeats  # noqa: F401
