"""`manage.py job_counts_recount [CLIENT_ID ...]`: count each client's unfinished and running jobs
and persisted results' bytes again from the rows (jobs/counts.py), for a client refused at a cap
it is not at (docs/deployment.md)."""
import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.models import Client
from jobs.counts import job_counts_recount


class Command(BaseCommand):
    help = (
        "Count clients' unfinished and running jobs and persisted results' bytes again from the rows "
        "(every client's, or those named), repairing the counts their caps read; safe under traffic."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("client_ids", nargs="*", type=uuid.UUID, help="the clients' ids (default: every client)")

    def handle(self, *args: Any, **options: Any) -> None:
        ids = options["client_ids"] or list(Client.objects.order_by("pk").values_list("pk", flat=True))
        if unknown := set(options["client_ids"]) - set(Client.objects.filter(pk__in=ids).values_list("pk", flat=True)):
            # A mistyped id was "checked" and found to have no drift: the client the operator
            # meant was left as it was, and they were told all was well.
            raise CommandError(f"No client with the id(s) {', '.join(sorted(map(str, unknown)))}; nothing counted.")
        checked = repaired = 0
        for client_id in ids:
            checked += 1
            if job_counts_recount(owner_id=client_id):
                repaired += 1
                self.stdout.write(f"Client {client_id}: its counts had drifted; counted again.")
        self.stdout.write(f"Checked {checked} client(s); {repaired} had counts that drifted.")
