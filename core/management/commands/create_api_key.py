"""`manage.py create_api_key NAME`: create a client named NAME with a new API key."""
import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.models import Client
from core.services import api_key_create, client_create


class Command(BaseCommand):
    help = "Create a client named NAME with a new API key (or, with --add, a key for an existing one)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--json", action="store_true", dest="as_json", help='Print {"name", "key"} as JSON.')
        parser.add_argument(
            "--add", action="store_true", help="Add a second key to an existing client NAME."
        )

    def handle(self, *args: Any, name: str, as_json: bool, add: bool, **options: Any) -> None:
        if not name.strip():
            # An unset shell variable (`create_api_key "$NAME"`) made a client with no name.
            raise CommandError("NAME is empty: give the client a name.")
        client = Client.objects.filter(name=name).first()
        if add:
            if client is None:
                raise CommandError(f"No client named {name!r}; drop --add to create it.")
        elif client is not None:
            raise CommandError(f"A client named {name!r} exists; use --add for another key.")
        else:
            client = client_create(name=name)
        key = api_key_create(client=client)
        if as_json:
            self.stdout.write(json.dumps({"name": client.name, "key": key}))
        else:
            self.stdout.write(f"Client: {client.name}\nAPI key (shown once): {key}")

