"""`manage.py dev_api_key`: print a working development API key, creating it on first use.

Embedded mode only (make run): the key is kept in DATA_DIR/dev-api-key so it survives restarts.
"""
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from core.auth import api_key_digest
from core.models import ApiKey, Client
from core.services import api_key_create, client_create

DEV_CLIENT_NAME = "dev"


class Command(BaseCommand):
    help = "Print the development API key (created on first use, kept in DATA_DIR)."

    def handle(self, *args: Any, **options: Any) -> None:
        key_file = settings.DATA_DIR / "dev-api-key"
        if key_file.exists():
            key = key_file.read_text().strip()
            if ApiKey.objects.filter(digest=api_key_digest(key), revoked_at__isnull=True).exists():
                self.stdout.write(key)
                return
        client = Client.objects.filter(name=DEV_CLIENT_NAME).first() or client_create(
            name=DEV_CLIENT_NAME
        )
        key = api_key_create(client=client)
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(key + "\n")
        key_file.chmod(0o600)
        self.stdout.write(key)
