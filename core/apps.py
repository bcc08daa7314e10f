"""App configs: the core app (clients and API keys), and the admin on the service's own site."""
from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Clients and API keys"


class AdminConfig(admin_apps.AdminConfig):
    """Django's admin, served by core.admin_site.AdminSite (its login throttled)."""

    default = False  # the core app's own config is CoreConfig
    default_site = "core.admin_site.AdminSite"
