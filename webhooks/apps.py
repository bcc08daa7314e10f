"""App config for webhooks: signing, delivery and the delivery log."""
from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"

    def ready(self) -> None:
        # Connects its receiver of core's client_deletion_started (importing models: once apps are ready).
        from webhooks import deletion  # noqa: F401
