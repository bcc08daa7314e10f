"""`manage.py client_delete CLIENT`: delete a client with all it owns, outside the web server: the
admin refuses a client of more than ADMIN_CLIENT_DELETE_MAX_JOBS jobs, whose deletion would
outlast a request (gunicorn's WEB_TIMEOUT_SECONDS). The command deletes it in batches, each its
own transaction (core.services.client_delete_in_batches), in bounded memory however large."""
import uuid
from time import monotonic
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import models

from core.models import Client
from core.services import CLIENT_DELETE_BATCH_ROWS, client_delete_in_batches

# At most one progress line a kind this often (and each kind's final count): a line a batch was
# about 4,000 lines for a client of a million jobs, the terminal flooded.
PROGRESS_EVERY_SECONDS = 2.0


class Command(BaseCommand):
    help = (
        "Delete a client (by its id or its name) with its API keys, jobs, results, webhook endpoints, "
        "events and deliveries: its keys revoked first, then what it owns a batch at a time, each in a "
        "transaction of its own, then the client. Stopped midway, run it again to finish."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("client", help="The client's id or its name.")
        parser.add_argument("--yes", action="store_true", help="Delete without asking to confirm.")
        parser.add_argument("--batch-rows", type=int, default=CLIENT_DELETE_BATCH_ROWS,
                            help=f"Rows a transaction deletes (default {CLIENT_DELETE_BATCH_ROWS:,}).")

    def handle(self, *args: Any, client: str, yes: bool, batch_rows: int, **options: Any) -> None:
        if batch_rows < 1:
            raise CommandError("--batch-rows must be at least 1.")
        owner = _client_found(client)
        self.stdout.write(f"Client “{owner.name}” ({owner.pk}) goes, with:")
        for kind, count in _owned_counts(owner).items():
            self.stdout.write(f"  {kind}: {count:,}")
        if not yes:
            try:
                answer = input("Delete it, with all of that? Type 'yes' to go on: ")
            except EOFError:  # no terminal to ask on (a script, `docker compose exec -T`)
                answer = ""
            if answer.strip() != "yes":
                raise CommandError("Nothing was deleted (pass --yes to delete without asking).")
        self.stdout.write(f"Deleting, its API keys revoked first, then {batch_rows:,} rows a transaction "
                          "(stopped midway, run this again to finish)...")
        started = monotonic()
        self._shown_at: dict[str, float] = {}
        self._unshown: tuple[str, int] | None = None
        try:
            client_delete_in_batches(client=owner, batch_rows=batch_rows, progress=self._progress)
        finally:  # stopped midway too, the operator sees how far each kind went
            self._unshown_show()
        self.stdout.write(self.style.SUCCESS(f"Deleted in {monotonic() - started:.1f} s."))

    def _progress(self, kind: str, deleted: int) -> None:
        """Say a kind's first batch, then at most a line every PROGRESS_EVERY_SECONDS, and its
        final count when the next kind starts (the kinds go one after the other)."""
        if self._unshown is not None and self._unshown[0] != kind:
            self._unshown_show()
        now = monotonic()
        shown_at = self._shown_at.get(kind)
        if shown_at is not None and now - shown_at < PROGRESS_EVERY_SECONDS:
            self._unshown = (kind, deleted)
            return
        self._shown_at[kind], self._unshown = now, None
        self.stdout.write(f"  {kind}: {deleted:,} deleted")

    def _unshown_show(self) -> None:
        if self._unshown is not None:
            (kind, deleted), self._unshown = self._unshown, None
            self.stdout.write(f"  {kind}: {deleted:,} deleted")


def _client_found(id_or_name: str) -> Client:
    try:
        by_id = models.Q(pk=uuid.UUID(id_or_name))
    except ValueError:
        by_id = models.Q(pk__in=[])
    found = list(Client.objects.filter(by_id | models.Q(name=id_or_name))[:2])
    if not found:
        raise CommandError(f"No client with the id or name {id_or_name!r}.")
    if len(found) > 1:  # one's name is the other's id
        raise CommandError(f"Two clients answer to {id_or_name!r}: name the one meant by its id.")
    return found[0]


def _owned_counts(client: Client) -> dict[str, int]:
    """How many rows of each kind the client's deletion cascades to (those rows' own cascades,
    a delivery's attempts, go with them uncounted), as the admin's confirmation counts them."""
    counts = {}
    for relation in Client._meta.get_fields(include_hidden=True):
        if relation.auto_created and not relation.concrete and relation.on_delete is models.CASCADE:
            related = relation.related_model
            count = related._default_manager.filter(**{relation.field.name: client}).count()
            if count:
                counts[str(related._meta.verbose_name_plural).capitalize()] = count
    return counts
