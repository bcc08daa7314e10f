"""App config for the core app (clients and API keys)."""
from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Clients and API keys"
