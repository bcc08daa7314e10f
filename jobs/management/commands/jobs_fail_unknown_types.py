"""`manage.py jobs_fail_unknown_types [--fail]`: list the unfinished jobs of types this code does
not know (a deploy removed or renamed the type), and with --fail fail them at once rather than
after the abandoned-job rule's 2 hours (jobs/unknown_types.py, docs/deployment.md)."""
from collections import defaultdict
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from jobs.unknown_types import jobs_of_unknown_types_counted, jobs_of_unknown_types_fail


class Command(BaseCommand):
    help = (
        "List the unfinished jobs of job types this code does not register, by type and client; with --fail, "
        "fail them (error.type job_type_unknown, their job.failed callbacks sent). Run it with --fail only once "
        "every process runs this release: a job of a type a deploy still rolling out adds would be failed too."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--fail", action="store_true", help="fail them (default: only list them)")

    def handle(self, *args: Any, **options: Any) -> None:
        rows = jobs_of_unknown_types_counted()
        if not rows:
            self.stdout.write("No unfinished jobs of job types this code does not know.")
            return
        by_type: dict[str, list[str]] = defaultdict(list)
        totals: dict[str, int] = defaultdict(int)
        for row in rows:
            by_type[row.job_name].append(f"  client {row.owner_name} ({row.owner_id}): {row.jobs}")
            totals[row.job_name] += row.jobs
        for job_name, lines in by_type.items():
            self.stdout.write(f"{job_name}: {totals[job_name]} unfinished job(s)")
            self.stdout.write("\n".join(lines))
        if not options["fail"]:
            self.stdout.write(f"Dry run: {sum(totals.values())} job(s) left as they are. Once every process runs "
                              "this release, run again with --fail to fail them.")
            return
        failed = jobs_of_unknown_types_fail()
        self.stdout.write(f"Failed {failed} job(s) of job types this code does not know.")
