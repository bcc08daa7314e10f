"""App config for webhooks: signing, delivery and the delivery log."""
from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
