"""`manage.py revoke_api_key PREFIX`: revoke the key(s) whose prefix is given."""
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.models import ApiKey
from core.services import api_key_revoke


class Command(BaseCommand):
    help = "Revoke API keys by their prefix (as listed in the admin) or by the whole key."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefix_or_key")

    def handle(self, *args: Any, prefix_or_key: str, **options: Any) -> None:
        keys = list(ApiKey.objects.filter(prefix=prefix_or_key[:12], revoked_at__isnull=True))
        if not keys:
            raise CommandError("No active key with that prefix.")
        for api_key in keys:
            api_key_revoke(api_key=api_key)
        self.stdout.write(f"Revoked {len(keys)} key(s).")
