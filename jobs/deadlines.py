"""The deadline rule (the periodic `jobs.enforce_deadlines`): cancelling the unfinished jobs whose
deadline has passed."""
from __future__ import annotations

from django.utils import timezone

from core.rows_apart import RowsApart
from jobs.models import Job
from jobs.transitions import job_cancel_past_deadline


def jobs_cancel_past_deadline(*, limit: int = 500) -> int:
    """Cancel the unfinished jobs whose deadline has passed (error.type deadline_exceeded); how
    many. Each apart: one whose cancel raises is logged (ERROR, with its id) and left for the
    next run, the others canceled all the same; the run then ends in RowsFailed
    (core/rows_apart.py)."""
    due = Job.objects.filter(deadline__lte=timezone.now(), status__in=Job.ACTIVE_STATUSES, cancel_requested=False)
    apart = RowsApart(task="jobs.enforce_deadlines", what="job")
    canceled = apart.each(list(due.values_list("pk", flat=True)[:limit]),
                          lambda job_id: job_cancel_past_deadline(job_id=job_id))
    apart.end()
    return canceled
