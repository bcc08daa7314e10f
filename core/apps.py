"""App config for the core app (clients and API keys)."""
from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Clients and API keys"

    def ready(self) -> None:
        from django.core.signals import request_finished, request_started

        from core.db import connections_checked_if_recent, connections_used

        # After Django's own receivers (connected when django.db was imported), which close old
        # connections and reset the health check: see HEALTH_CHECK_AFTER_IDLE_SECONDS.
        request_started.connect(connections_checked_if_recent, dispatch_uid="core.db.checked")
        request_finished.connect(connections_used, dispatch_uid="core.db.used")
