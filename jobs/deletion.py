"""A client's deliveries and jobs stopped as its batched deletion starts (core.signals): its
unfinished jobs' callback_urls cleared, then its webhooks stopped (webhooks/deletion.py), then
its unfinished jobs canceled, so that nothing more goes to its receivers, and none of its jobs
takes a worker, while the deletion runs, minutes for a big client."""
from __future__ import annotations

import uuid
from typing import Any

from django.dispatch import receiver

from core.signals import client_deletion_started
from jobs.models import Job
from jobs.transitions import owner_jobs_cancel
from webhooks import deletion as webhooks_deletion


def owner_callbacks_stop(*, owner_id: uuid.UUID) -> int:
    """Clear the callback_url of the owner's unfinished jobs; how many. A transition reads it
    under its job's lock (jobs/transitions.py): one under way commits its event's delivery
    first, for the webhooks' stop that follows to cancel; a later one records none. Without
    this, a job a worker finished during the deletion sent its final event to its callback_url.
    One statement: an owner has at most JOB_MAX_UNFINISHED_PER_CLIENT (10,000) unfinished jobs."""
    return (Job.objects.filter(owner_id=owner_id, status__in=Job.ACTIVE_STATUSES)
            .exclude(callback_url="").update(callback_url=""))


@receiver(client_deletion_started, dispatch_uid="jobs.owner_deliveries_stop")
def _deletion_started(sender: Any, *, client_id: uuid.UUID, **kwargs: Any) -> None:
    owner_callbacks_stop(owner_id=client_id)
    webhooks_deletion.owner_deliveries_stop(owner_id=client_id)
    # Last: their job.canceled events find no callback_url and no enabled endpoint, so go to no
    # receiver. Without this, its queued jobs went on starting (worker time of every other
    # client, model tokens) until the batches reached them.
    owner_jobs_cancel(owner_id=client_id)
