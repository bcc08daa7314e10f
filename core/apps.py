"""App configs: the core app (clients and API keys), and the admin on the service's own site."""
from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps
from django.core.signals import request_finished, request_started

from core.connections import connections_released, connections_reused


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Clients and API keys"

    def ready(self) -> None:
        # A request's connections are checked before reuse after a pause (core/connections.py).
        request_started.connect(connections_reused, dispatch_uid="core.connections_reused")
        request_finished.connect(connections_released, dispatch_uid="core.connections_released")


class AdminConfig(admin_apps.AdminConfig):
    """Django's admin, served by core.admin_site.AdminSite (its login throttled)."""

    default = False  # the core app's own config is CoreConfig
    default_site = "core.admin_site.AdminSite"
