"""`manage.py jobs_fail_unknown_types [--fail]`: list the unfinished jobs of types this code does
not know (a deploy removed or renamed the type), and with --fail fail them at once rather than
after the abandoned-job rule's 2 hours (jobs/unknown_types.py, docs/deployment.md)."""
import signal
from collections import defaultdict
from types import FrameType
from typing import Any, Self

from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobs.unknown_types import FAIL_BATCH, jobs_of_unknown_types_counted, jobs_of_unknown_types_fail


class Command(BaseCommand):
    help = (
        "List the unfinished jobs of job types this code does not register, by type and client; with --fail, "
        "fail them (error.type job_type_unknown, their job.failed callbacks sent), saying how far it got every "
        f"{FAIL_BATCH} jobs. Run it with --fail only once every process runs this release: a job of a type a "
        "deploy still rolling out adds would be failed too. Ctrl-C stops it after the job in hand (each is "
        "failed on its own); run it again to fail the rest."
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
        total = sum(totals.values())
        if not options["fail"]:
            self.stdout.write(f"Dry run: {total} job(s) left as they are. Once every process runs "
                              "this release, run again with --fail to fail them.")
            return
        self._say(f"Failing {total} job(s), {FAIL_BATCH} at a time (Ctrl-C stops after the job in hand)...")
        with _stop_requested() as stop:
            failed = jobs_of_unknown_types_fail(
                progress=lambda failed: self._say(f"  failed {failed} of {total} so far"),
                stop=lambda: bool(stop),
            )
        # Each job is failed in a transaction of its own: those failed are done, callbacks and all,
        # and the rest untouched, for a run again to take up. Counted again: the stop may have
        # come during the last one.
        left = sum(row.jobs for row in jobs_of_unknown_types_counted()) if stop else 0
        if left:
            raise CommandError(
                f"Interrupted: failed {failed} of {total} job(s); {left} left as they were. "
                "Run this again to fail them.",
                returncode=130,
            )
        self.stdout.write(f"Failed {failed} job(s) of job types this code does not know.")

    def _say(self, line: str) -> None:
        # Flushed: through a pipe or into a file (`| tee`, a job runner's log) Python would hold
        # the lines back until the end, and a long run looked hung.
        self.stdout.write(line)
        self.stdout.flush()


class _stop_requested:
    """Ctrl-C (SIGINT) or a kill (SIGTERM) while failing them: a stop asked for, taken between two
    jobs; a second one stops at once (the job in hand's transaction rolled back). Truthy once
    asked for."""

    def __init__(self) -> None:
        self._asked = False
        self._before: dict[int, Any] = {}

    def __bool__(self) -> bool:
        return self._asked

    def __enter__(self) -> Self:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._before[signum] = signal.signal(signum, self._ask)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._before.items():
            signal.signal(signum, handler)

    def _ask(self, signum: int, frame: FrameType | None) -> None:
        if self._asked:
            raise KeyboardInterrupt
        self._asked = True
