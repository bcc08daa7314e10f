"""Jobs (the source of truth for every submitted job), persisted results and idempotency keys."""
from __future__ import annotations

import uuid

from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from webhooks.events import FINAL_JOB_EVENT_TYPES, JOB_EVENT_TYPES

# The events a job's callback can receive, and those it receives when `webhook_events` is unset.
WEBHOOK_EVENT_TYPES = JOB_EVENT_TYPES
FINAL_WEBHOOK_EVENTS = FINAL_JOB_EVENT_TYPES
DEFAULT_WEBHOOK_EVENTS = list(FINAL_WEBHOOK_EVENTS)


class Job(models.Model):
    class Status(models.TextChoices):
        PENDING = "PENDING"
        STARTED = "STARTED"
        RETRY = "RETRY"
        SUCCESS = "SUCCESS"
        FAILURE = "FAILURE"
        REVOKED = "REVOKED"

    FINAL_STATUSES = frozenset({Status.SUCCESS, Status.FAILURE, Status.REVOKED})
    # Not final yet: queued or running. What the unfinished-job cap counts.
    ACTIVE_STATUSES = frozenset({Status.PENDING, Status.STARTED, Status.RETRY})
    # On a worker (or waiting there to retry).
    RUNNING_STATUSES = frozenset({Status.STARTED, Status.RETRY})

    # Also the root Celery task id.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of its own: job_owner_created (owner first) serves owner lookups and cascades.
    owner = models.ForeignKey(
        "core.Client", on_delete=models.CASCADE, related_name="jobs", db_index=False
    )
    job_name = models.CharField(max_length=200)
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    # {"current": int, "total": int, "message": str} while the job reports progress.
    progress = models.JSONField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    # {"type": str, "message": str}: the job's own failure, not an HTTP error.
    error = models.JSONField(null=True, blank=True)
    callback_url = models.URLField(max_length=2000, blank=True, default="")
    # Event types the callback receives.
    webhook_events = models.JSONField(default=list, blank=True)
    # Whether the owner's registered webhook endpoints get this job's events too.
    webhook_endpoints = models.BooleanField(default=True)
    # Set by a cancel; running job code checks it between steps.
    cancel_requested = models.BooleanField(default=False)
    # When the job was handed to the broker; NULL means the sweeper still has to publish it. Its
    # first message carries it: a message of an earlier dispatch never runs the job.
    dispatched_at = models.DateTimeField(null=True, blank=True)
    # A running job's next step, handed over on the row before its message is sent (jobs.tasks):
    # its index, and the output of the step before it, which it takes. With dispatched_at NULL the
    # sweeper still has to publish it (the broker refused the message, or it is a retry waiting out
    # a backoff longer than a sweep, published once retry_at has come); a step's message
    # carries its hand-over's dispatched_at, so a message of an earlier hand-over does nothing.
    next_step = models.PositiveSmallIntegerField(null=True, blank=True)
    step_input = models.JSONField(null=True, blank=True)
    # When a message of that hand-over started its step (NULL until one did): another message of
    # the same hand-over then runs nothing, and the sweeper no longer takes the message for lost.
    step_started_at = models.DateTimeField(null=True, blank=True)
    # The running step's heartbeat, written by its worker while it runs (jobs.leases); NULL when no
    # run holds the step: another copy of its message runs it only once this is NULL or stale.
    step_heartbeat_at = models.DateTimeField(null=True, blank=True)
    # The client's own labels: up to 16 string keys to string values (filterable on the list).
    metadata = models.JSONField(default=dict, blank=True)
    # Not before: the sweeper publishes the job once this time has come (NULL: at once).
    run_at = models.DateTimeField(null=True, blank=True)
    # Not after: a job not final by then is canceled (error.type deadline_exceeded).
    deadline = models.DateTimeField(null=True, blank=True)
    # Which run of the job this is (1 for the first), and how many runs its retry policy allows
    # after a failure, each that many seconds after the failure before it.
    attempt = models.PositiveIntegerField(default=1)
    max_attempts = models.PositiveIntegerField(default=1)
    retry_backoff_seconds = models.PositiveIntegerField(default=0)
    # When its latest retry is due (NULL until it fails once): the sweeper publishes a retry
    # waiting on the row then, and one that has not started is taken for lost counting from it,
    # not from its hand-over (jobs.dispatch).
    retry_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # The X-Request-ID of the request that submitted it (core/request_context.py; "": none, as
    # for a job made outside a request): its messages carry it into its run's and its webhooks'
    # log lines, whoever publishes them (jobs/dispatch.py).
    request_id = models.CharField(max_length=200, blank=True, default="")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="job_owner_created"),
            models.Index(fields=["owner", "status", "-created_at"], name="job_owner_status_created"),
            models.Index(fields=["owner", "job_name", "-created_at"], name="job_owner_name_created"),
            # The sweeper's scan, owner by owner, in the order the jobs are due (scheduled ones
            # at their run_at): only the jobs waiting for dispatch are in it (a job is published
            # when it is accepted, and waits here only when it is scheduled, while its owner is
            # at its running cap, or while the broker is down).
            models.Index(
                F("owner"),
                Coalesce("run_at", "created_at"),
                name="job_waiting",
                condition=Q(dispatched_at__isnull=True, status="PENDING"),
            ),
            # The deadline sweep: only unfinished jobs with a deadline are in it.
            models.Index(
                fields=["deadline"],
                name="job_deadline",
                condition=Q(deadline__isnull=False, status__in=["PENDING", "STARTED", "RETRY"]),
            ),
            # The operators' reads across clients (console/, /metrics): the jobs not final yet
            # (by status; the oldest pending in the order they fell due, scheduled ones at their
            # run_at, so the oldest is the first entry, not a sort of every pending job)...
            models.Index(
                F("status"),
                Coalesce("run_at", "created_at"),
                name="job_active_since",
                condition=Q(status__in=["PENDING", "STARTED", "RETRY"]),
            ),
            # ...and those that finished lately (by status, the failures of the last hour).
            models.Index(fields=["finished_at"], name="job_finished", condition=Q(finished_at__isnull=False)),
            # The sweeper's look for jobs whose message was lost (jobs.dispatch.jobs_release_stranded):
            # only the jobs in the broker, handed to it and not started.
            models.Index(
                fields=["dispatched_at"],
                name="job_in_broker",
                condition=Q(status="PENDING", dispatched_at__isnull=False),
            ),
            # The sweeper's look for running jobs whose next step (or retry) waits for it
            # (jobs.dispatch.job_steps_publish_waiting), by when it is due (a step's, NULL or
            # past): the retries waiting out a backoff longer than a sweep, and the steps the
            # broker refused.
            models.Index(
                fields=["retry_at"],
                name="job_step_due",
                condition=Q(next_step__isnull=False, dispatched_at__isnull=True, status__in=["STARTED", "RETRY"]),
            ),
            # The sweeper's look for running jobs whose next step's message was lost
            # (jobs.dispatch.job_steps_release_stranded): only the steps in the broker, handed to
            # it and not started.
            models.Index(
                fields=["dispatched_at"],
                name="job_step_in_broker",
                condition=Q(next_step__isnull=False, step_started_at__isnull=True, dispatched_at__isnull=False,
                            status__in=["STARTED", "RETRY"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.job_name} {self.id} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL_STATUSES

    @property
    def aborted(self) -> bool:
        """Canceled before it ever started (by its client, or by its deadline)."""
        return self.status == self.Status.REVOKED and self.started_at is None

    @property
    def retry(self) -> dict[str, int] | None:
        """The job's retry policy, or None when it runs once."""
        if self.max_attempts <= 1:
            return None
        return {"max_attempts": self.max_attempts, "backoff_seconds": self.retry_backoff_seconds}


class JobCounts(models.Model):
    """Per owner: how many of its jobs are not final yet (what the submit's cap reads), how many
    are running (what the start's fair-share cap reads) and how many bytes its persisted results
    hold (the results quota), and how many its jobs' payloads and metadata hold (the job storage
    quota); one row by key, where counting the jobs cost the submit about a
    microsecond of database CPU per unfinished job (docs/benchmarks.md, "Fixes").

    Made with its client (a trigger on the clients table, migration 0010), so that the submit's
    cap always has a row to lock, even for a new client's first jobs arriving together. Kept by
    triggers on the jobs and results tables (migrations 0002, 0004 and 0024), so every way a
    job changes keeps it exact (the services, the admin, a bulk insert, a cascade, SQL by hand)
    and the services need no extra statement. A write that changes a count locks its owner's
    row until the transaction commits, which orders that owner's submits, starts and finishes;
    none holds it longer than a commit.
    """

    owner = models.OneToOneField(
        "core.Client", primary_key=True, on_delete=models.CASCADE, related_name="+"
    )
    unfinished = models.IntegerField(default=0)
    running = models.IntegerField(default=0, db_default=0)
    result_bytes = models.BigIntegerField(default=0, db_default=0)
    # The bytes its jobs' payloads and metadata hold (the job storage quota; migration 0024).
    job_bytes = models.BigIntegerField(default=0, db_default=0)

    class Meta:
        verbose_name_plural = "job counts"

    def __str__(self) -> str:
        return f"{self.owner_id}: {self.unfinished} unfinished, {self.running} running"


class JobResult(models.Model):
    """A job's result kept for `/api/results/`; outlives the job row it came from."""

    # No index of its own: result_owner_created (owner first) serves it.
    owner = models.ForeignKey(
        "core.Client", on_delete=models.CASCADE, related_name="results", db_index=False
    )
    job = models.ForeignKey(Job, null=True, on_delete=models.SET_NULL, related_name="results")
    task_name = models.CharField(max_length=200)
    result = models.JSONField(null=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="result_owner_created"),
            models.Index(fields=["owner", "task_name", "-created_at"], name="result_owner_task_created"),
            # Pruning by age (jobs.retention.job_results_prune); the owner-first ones above serve
            # it only by reading the whole index.
            models.Index(fields=["created_at"], name="result_created"),
        ]

    def __str__(self) -> str:
        return f"{self.task_name} result {self.pk}"


class IdempotencyKey(models.Model):
    """A client's `Idempotency-Key`, the endpoint, fingerprint and headers of the request it came
    with, and its job."""

    class Endpoint(models.TextChoices):
        """Where a key was first sent; it answers there only. The starter's endpoint has its own:
        it ignores the fields it does not know (`callback_url`, `deadline`, ...) that
        `POST /api/jobs/` honours, so one body may ask the two for different jobs."""

        JOB = "job", "POST /api/jobs/"
        BATCH = "batch", "POST /api/jobs/batch/"
        LEGACY = "legacy", "POST /api/job/"

    # No index of its own: the unique (owner, key) index, owner first, serves the owner's lookups
    # and a client's deletion, and one index fewer is one write fewer for every keyed submission.
    owner = models.ForeignKey("core.Client", on_delete=models.CASCADE, related_name="+", db_index=False)
    key = models.CharField(max_length=255)
    # SHA-256 of the request body as canonical JSON.
    fingerprint = models.CharField(max_length=64)
    # Saved with the job; NULL only in a row an earlier version left when its request died
    # between committing the key and the job (jobs/idempotency.py frees it).
    job = models.ForeignKey(Job, null=True, on_delete=models.CASCADE, related_name="+")
    # A batch's jobs, in order, once the batch is made (its `job` is the first of them); NULL
    # for one job, a batch of one's too (its `endpoint` tells it from a single submission).
    batch = models.JSONField(null=True, blank=True)
    # NULL only in a row saved before keys were bound to their endpoint: it answers on any.
    endpoint = models.CharField(max_length=8, choices=Endpoint.choices, null=True, blank=True)
    # The request's headers that change what it makes, as parsed (jobs/idempotency.py
    # request_headers): {} when it sent none. NULL only in a row saved before they were compared:
    # such a key is compared by its body alone.
    headers = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["owner", "key"], name="idempotency_owner_key"),
        ]
        indexes = [
            # Pruning past the TTL (jobs.idempotency.idempotency_keys_prune).
            models.Index(fields=["created_at"], name="idempotency_created"),
        ]


class JobEvent(models.Model):
    """The log of a job's events (`job.started`, `job.progress`, the final one), every job's,
    written in the transaction of the transition it tells of: what `GET /api/jobs/{id}/events/`
    and `GET /api/events/` stream and resume from (`id` is the SSE id). The webhook outbox only
    keeps events someone is subscribed to; this keeps them all, and goes with its job (pruned
    with it)."""

    id = models.BigAutoField(primary_key=True)
    # No index of its own: jobevent_job (job first) serves it and the cascade.
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="+", db_index=False)
    # No index of its own: jobevent_owner (owner first) serves it.
    owner = models.ForeignKey("core.Client", on_delete=models.CASCADE, related_name="+", db_index=False)
    job_name = models.CharField(max_length=200)
    event_type = models.CharField(max_length=50)
    # The webhook body: `{"type", "timestamp", "data"}` as compact JSON (webhooks.outbox.event_body).
    body = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["job", "id"], name="jobevent_job"),
            models.Index(fields=["owner", "id"], name="jobevent_owner"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.pk} of {self.job_id}"


class ModelUsage(models.Model):
    """Per owner and UTC day: the tokens its jobs' model calls spent, as the provider counted
    them (`usage.total_tokens`), which the daily budget (MODEL_TOKENS_PER_CLIENT_PER_DAY) is
    checked against. Added to by one upsert per call (jobs.sql.model_usage_add); pruned a few
    days on (jobs.retention)."""

    # No index of its own: the unique (owner, day) index, owner first, serves it and the cascade.
    owner = models.ForeignKey("core.Client", on_delete=models.CASCADE, related_name="+", db_index=False)
    day = models.DateField()
    tokens = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["owner", "day"], name="modelusage_owner_day"),
        ]
        verbose_name_plural = "model usage"

    def __str__(self) -> str:
        return f"{self.owner_id} on {self.day}: {self.tokens} tokens"
