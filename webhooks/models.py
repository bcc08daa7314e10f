"""Webhook endpoints, signing secrets, the event outbox (exact body bytes), deliveries and their
attempts."""
from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone


def _message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


class Endpoint(models.Model):
    """A URL a client registered once to receive the events it subscribes to (beside the per-job
    callback_url), with its own signing secret, custom headers, pace and health."""

    class DisabledReason(models.TextChoices):
        NONE = "", "enabled"
        CLIENT = "client", "disabled by the client"
        FAILING = "failing", "every attempt failed for too long"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of its own: endpoint_owner_created (owner first) serves it.
    owner = models.ForeignKey("core.Client", on_delete=models.CASCADE, related_name="+", db_index=False)
    url = models.CharField(max_length=2000)
    description = models.CharField(max_length=500, blank=True, default="")
    # The event types it receives.
    event_types = models.JSONField(default=list)
    enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=10, blank=True, default="", choices=DisabledReason.choices)
    # When it was disabled (by its client or the service); NULL while it is enabled.
    disabled_at = models.DateTimeField(null=True, blank=True)
    # Sent with every delivery: {name: value}.
    headers = models.JSONField(default=dict, blank=True)
    # At most this many deliveries a second (spaced, never dropped); NULL: no pace.
    rate_limit_per_second = models.FloatField(null=True, blank=True)
    # When its next delivery may go, under rate_limit_per_second.
    next_slot_at = models.DateTimeField(null=True, blank=True)
    # Counts changes of its pace and of enabled: the rescheduling of its waiting deliveries that
    # an earlier change started stops at its next batch (webhooks/reschedule.py).
    schedule_version = models.PositiveIntegerField(default=0)
    # When its rescheduling last asked for a batch; NULL when none is under way. One whose
    # message was lost is started again by the dispatcher.
    rescheduling_since = models.DateTimeField(null=True, blank=True)
    # Health: the run of failures (since its first), and the last of each outcome.
    consecutive_failures = models.PositiveIntegerField(default=0)
    failing_since = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="endpoint_owner_created"),
            # The console's disabled endpoints, by reason (a partial index: the enabled ones,
            # nearly all of them, are not in it).
            models.Index(fields=["disabled_reason"], name="endpoint_disabled", condition=Q(enabled=False)),
            # The dispatcher's look for reschedulings whose message was lost: only those under way.
            models.Index(fields=["rescheduling_since"], name="endpoint_rescheduling",
                         condition=Q(rescheduling_since__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"endpoint {self.pk} ({self.url})"


class SigningSecret(models.Model):
    """A client's `whsec_` secret (or one of its endpoints'). The current one has no
    `expires_at`; a rotated-out one keeps signing until `expires_at` so receivers can switch
    without dropping a message."""

    owner = models.ForeignKey("core.Client", on_delete=models.CASCADE, related_name="+")
    # The endpoint it signs for; NULL: the client's own, for per-job callback_url deliveries.
    endpoint = models.ForeignKey(Endpoint, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    # "whsec_" + base64 of 32 random bytes, sealed (webhooks/sealing.py: a Fernet token of 164
    # characters under a key derived from SECRET_KEY). Not hashed, as API keys are: signing needs
    # the key itself; sealed, a backup or a replica of the database does not give it away.
    secret = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["owner"], condition=Q(expires_at__isnull=True, endpoint__isnull=True),
                name="secret_one_current",
            ),
            models.UniqueConstraint(
                fields=["endpoint"], condition=Q(expires_at__isnull=True, endpoint__isnull=False),
                name="secret_one_current_per_endpoint",
            ),
        ]

    def __str__(self) -> str:
        # Never any part of the secret: this shows up in the admin and in logs.
        state = "current" if self.expires_at is None else f"until {self.expires_at:%Y-%m-%d %H:%M}"
        return f"signing secret {self.pk} of {self.owner_id} ({state})"


class Event(models.Model):
    """The outbox: one row per event, written in the transaction that changed the subject.

    `body` holds the exact bytes signed and sent on every attempt and redelivery.
    """

    # The `webhook-id` header: the same on every attempt and redelivery of this event.
    # Unique through a constraint rather than `unique=True`, which on PostgreSQL also builds a
    # second (LIKE-pattern) index that no query uses and every event's INSERT would update.
    message_id = models.CharField(max_length=40, default=_message_id)
    # No index of its own: event_owner_type (owner first) serves it and the cascade.
    owner = models.ForeignKey("core.Client", on_delete=models.CASCADE, related_name="+", db_index=False)
    # What the event is about (a job's id); webhooks knows no more about it than that.
    subject_id = models.UUIDField()
    event_type = models.CharField(max_length=50)
    body = models.BinaryField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["subject_id", "event_type", "-created_at"], name="event_subject"),
            # An owner's events (a client's deletion); the deliveries' ?event_type= reads
            # delivery_owner_type_created since migration webhooks 0016.
            models.Index(fields=["owner", "event_type"], name="event_owner_type"),
            # Pruning by age (webhooks.outbox.events_prune).
            models.Index(fields=["created_at"], name="event_created"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["message_id"], name="event_message_id_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.message_id}"


class Delivery(models.Model):
    """Sending one event to one URL, attempt after attempt (a redelivery is a new Delivery)."""

    class State(models.TextChoices):
        PENDING = "pending"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        # Held while its endpoint is disabled; pending again when it is enabled.
        ENDPOINT_DISABLED = "endpoint_disabled"
        # Its endpoint was deleted before it was delivered, or its client's deletion began
        # (webhooks/deletion.py).
        CANCELED = "canceled"

    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="deliveries")
    # No index of its own: delivery_owner_created (owner first) serves it and the cascade.
    owner = models.ForeignKey("core.Client", on_delete=models.CASCADE, related_name="+", db_index=False)
    subject_id = models.UUIDField()
    # Its event's type, copied (an event's type never changes) so that an owner's deliveries of
    # one type are read through delivery_owner_type_created. Through the event, PostgreSQL
    # estimated a type by its share among every client's events: for a type rare in one client's
    # log it walked all of the client's deliveries, looking up each one's event. Empty for one the
    # previous release recorded after migration webhooks 0016 ran (docs/deployment.md).
    event_type = models.CharField(max_length=50, blank=True, default="", db_default="")
    # The registered endpoint it goes to; NULL: the job's own callback_url.
    # No index of its own: delivery_endpoint_created (endpoint first) serves it.
    endpoint = models.ForeignKey(
        Endpoint, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    # Where it was addressed when it was recorded: the job's callback_url, or its endpoint's URL
    # then. An endpoint's delivery goes to the endpoint's URL of the moment at each attempt (read
    # by the claim), which the attempt records: a change of the URL rewrites no delivery.
    url = models.CharField(max_length=2000)
    # A callback_url's host and port, lowercased: the receiver the console counts its failures
    # under, read without parsing every failing delivery's URL. Empty for an endpoint's delivery
    # (its endpoint is its receiver), and for a callback's made before migration 0011. A
    # database default too: the previous release's processes insert deliveries without it.
    authority = models.CharField(max_length=2000, blank=True, default="", db_default="")
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING)
    redelivery = models.BooleanField(default=False)
    attempt_count = models.PositiveIntegerField(default=0)
    # When the next attempt is due; NULL once the delivery is final.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # When a task for the next attempt was last published, so the dispatcher does not
    # publish it again while it waits in a backlog (NULL: nobody published it).
    dispatched_at = models.DateTimeField(null=True, blank=True)
    # The claim of the worker sending an attempt right now: only the holder of `claim_token`
    # may record the outcome, and an expired claim (a crashed worker) can be taken over.
    claim_token = models.UUIDField(null=True, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Whether its receiver failed an attempt of it: True once one did; False while every failed
    # attempt was the service's own fault (ATTEMPT_INTERNAL_ERROR), so that the console's failing
    # receivers and their metric do not count it against its receiver (webhooks/selectors.py
    # deliveries_failing); NULL before any attempt failed, and for a delivery whose attempts
    # failed before migration 0014 (counted as its receiver's, as it was).
    receiver_failed = models.BooleanField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "deliveries"
        indexes = [
            models.Index(fields=["subject_id", "-created_at"], name="delivery_subject"),
            # An owner's log (GET /api/deliveries/), an endpoint's (health, recover).
            models.Index(fields=["owner", "-created_at"], name="delivery_owner_created"),
            # An owner's log by event type (?event_type=), newest first whatever the type's share.
            models.Index(fields=["owner", "event_type", "-created_at"], name="delivery_owner_type_created"),
            # An owner's log by state (?state=), so that it reads none of the other clients'
            # deliveries (the partial indexes below hold every client's). Only the deliveries not
            # succeeded, a few in a hundred: a delivery leaves it when it succeeds, and
            # ?state=succeeded walks delivery_owner_created, nearly all of whose rows match.
            models.Index(
                fields=["owner", "state", "-created_at"], name="delivery_owner_state_created",
                condition=~Q(state="succeeded"),
            ),
            models.Index(fields=["endpoint", "-created_at"], name="delivery_endpoint_created"),
            # The dispatcher's scan: only pending deliveries are in it.
            models.Index(
                fields=["next_attempt_at"], name="delivery_due", condition=Q(state="pending")
            ),
            # The console's receivers that fail: deliveries given up on lately.
            models.Index(fields=["finished_at"], name="delivery_failed", condition=Q(state="failed")),
            # The deliveries held behind disabled endpoints: the console's count of them by
            # endpoint, and an endpoint's own when it is enabled again.
            models.Index(fields=["endpoint"], name="delivery_held", condition=Q(state="endpoint_disabled")),
        ]

    def __str__(self) -> str:
        return f"delivery {self.pk} of {self.event_id} ({self.state})"


# What begins the error of an attempt failed by the service's own fault (a bug: its sending
# raised, or its outcome could not be recorded), not its receiver's: then " sending: <type>" or
# " recording the outcome: <type>". Such an attempt is retried and given up as any other, but
# counts neither way in its endpoint's health (webhooks/health.py): a bug of ours must not
# disable a client's healthy endpoint, nor a success hide a receiver's failures.
ATTEMPT_INTERNAL_ERROR = "Internal error while"


class DeliveryAttempt(models.Model):
    """One HTTP attempt: a status code and the start of the response, or a network error."""

    # No index of its own: attempt_number_unique (delivery first) serves it.
    delivery = models.ForeignKey(
        Delivery, on_delete=models.CASCADE, related_name="attempts", db_index=False
    )
    # Its delivery's endpoint (NULL: a callback_url's, or an attempt opened before migration
    # 0010), copied when the attempt is opened, so that an endpoint's recent attempts are found
    # without going through the deliveries (its health counts). A delivery's endpoint never
    # changes. Not a foreign key: deleting an endpoint sets its deliveries' endpoint to NULL,
    # which this leaves as it is rather than updating every attempt of it.
    endpoint_id = models.UUIDField(null=True, blank=True)
    # The URL it was sent to: its endpoint's when it was claimed, or the callback_url. Empty for
    # one opened before migration 0013 (its delivery's URL then). A database default too: the
    # previous release's processes open attempts without it.
    url = models.CharField(max_length=2000, blank=True, default="", db_default="")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    # NULL while the attempt is in flight (or if its worker died mid-attempt).
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    # The first few KiB of the response body, decoded leniently.
    response_body = models.TextField(blank=True, default="")
    # The network error, refusal or interruption; empty when the receiver answered.
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["number"]
        indexes = [
            # An endpoint's attempts by start: its health counts of the last 24 hours
            # (webhooks/selectors.py endpoint_attempt_counts) read its own recent attempts and
            # nothing else. Partial: a callback_url's attempts (no endpoint) are not in it.
            models.Index(
                fields=["endpoint_id", "started_at"], name="attempt_endpoint_started",
                condition=Q(endpoint_id__isnull=False),
            ),
        ]
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="attempt_number_unique"),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of delivery {self.delivery_id}"
