"""The deadline rule (the periodic `jobs.enforce_deadlines`): cancelling the unfinished jobs whose
deadline has passed."""
from __future__ import annotations

from django.utils import timezone

from core.rows_apart import PAGE_ROWS, RowsApart
from jobs.models import Job
from jobs.transitions import job_cancel_past_deadline


def jobs_cancel_past_deadline(*, page_rows: int = PAGE_ROWS) -> int:
    """Cancel the unfinished jobs whose deadline has passed (error.type deadline_exceeded); how
    many. Each apart: one whose cancel raises is logged (ERROR, with its id) and left for the
    next run, the others canceled all the same; the run then ends in RowsFailed. Read
    `page_rows` at a time from a random key, so that the others are reached however many raise
    (core.rows_apart.MOST_ROWS_READ a run: core/rows_apart.py)."""
    due = Job.objects.filter(deadline__lte=timezone.now(), status__in=Job.ACTIVE_STATUSES, cancel_requested=False)
    apart = RowsApart(task="jobs.enforce_deadlines", what="job")
    canceled = apart.pages(due.values_list("pk", flat=True), lambda job_id: job_cancel_past_deadline(job_id=job_id),
                           page_rows=page_rows)
    apart.end()
    return canceled
