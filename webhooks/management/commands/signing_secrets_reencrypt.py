"""`manage.py signing_secrets_reencrypt`: seal every webhook signing secret again under the
current SECRET_KEY, the step of its rotation after which the previous key may leave
SECRET_KEY_FALLBACKS (docs/deployment.md)."""
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from webhooks.secrets import signing_secrets_reencrypt


class Command(BaseCommand):
    help = (
        "Encrypt every webhook signing secret again under the current SECRET_KEY (those under one of "
        "SECRET_KEY_FALLBACKS), so that the previous key can be dropped from SECRET_KEY_FALLBACKS."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        moved, unreadable = signing_secrets_reencrypt()
        self.stdout.write(f"Re-encrypted {moved} signing secret(s) under the current SECRET_KEY.")
        if unreadable:
            raise CommandError(
                f"{unreadable} signing secret(s) could not be decrypted with SECRET_KEY or any of "
                "SECRET_KEY_FALLBACKS, and were left as they are: put the key they were encrypted under "
                "back in SECRET_KEY_FALLBACKS and run this again (or have their clients rotate them)."
            )
