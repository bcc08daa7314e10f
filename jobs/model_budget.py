"""The daily model budget: the tokens one client's jobs may spend on model calls per UTC day
(MODEL_TOKENS_PER_CLIENT_PER_DAY, or the client's own where the operator set one: core/limits.py),
so one client cannot spend the service's whole provider quota, and money, and leave every other
client's model jobs failing on the provider's 429.

Checked twice: at submission, where a job of a type that calls a model (`JobType.uses_model`)
is refused with 429 `model_budget_exhausted` once its owner's day is spent (one indexed read,
the budget read off the client its API key loaded; none for other types); and before each model
call of a running job, where a job admitted before the budget ran out fails with the same code,
without calling the model and without its retry policy running it again (one read: the owner's
budget and its usage of the day together). Each call's tokens (`usage.total_tokens`) are added once it has
answered, so the budget is overshot by the calls in flight when it runs out: each job makes one
call at a time, so by at most JOB_MAX_RUNNING_PER_CLIENT calls' tokens (each at most the
model's context window; with no running cap, as many calls as the jobs workers run processes).
A server that reports no usage is not budgeted; one that reports more than a call can spend is
counted as that much (jobs/types/checklist_client.py, MAX_TOKENS_PER_CALL). A try whose answer
the client's bounds cut off is counted as an estimate (jobs/types/checklist_calls.py).
"""
from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta

from django.db.models import OuterRef, Subquery
from django.utils import timezone

from core.db import delete_in_batches
from core.errors import TooManyRequests
from core.limits import client_limit, limit_default
from core.models import Client
from core.ratelimit import ceiling_seconds
from jobs import sql, telemetry
from jobs.models import ModelUsage
from jobs.types.base import JobFailed


def budget_day(now: datetime) -> date:
    return now.astimezone(UTC).date()


def next_budget_day_at(now: datetime) -> datetime:
    """When the owners' budgets renew after `now`: the next midnight UTC."""
    return datetime.combine(budget_day(now) + timedelta(days=1), time(), tzinfo=UTC)


def model_tokens_spent(*, owner_id: uuid.UUID, day: date) -> int:
    """The tokens the owner's jobs spent on `day` (one read of the unique (owner, day) index)."""
    spent = ModelUsage.objects.filter(owner_id=owner_id, day=day).values_list("tokens", flat=True)
    return next(iter(spent), 0)


def _budget_and_spent(owner_id: uuid.UUID, day: date) -> tuple[int, int]:
    """The owner's budget and the tokens its jobs spent on `day`, in one read of its row with its
    usage row of the day (a worker has no client loaded); (0, 0) for an owner deleted since."""
    spent = ModelUsage.objects.filter(owner_id=OuterRef("pk"), day=day).values("tokens")
    row = Client.objects.filter(pk=owner_id).values_list("model_tokens_per_day", Subquery(spent)).first()
    if row is None:
        return 0, 0
    override, tokens = row
    return (limit_default("model_tokens_per_day") if override is None else override), tokens or 0


def _message(spent: int, budget: int, now: datetime) -> str:
    return (
        f"Your jobs have spent {spent} model tokens today, at or over the daily budget of "
        f"{budget}; jobs that call a model are refused until it renews at {next_budget_day_at(now).isoformat()}."
    )


def model_budget_require_for_submit(*, owner: Client, now: datetime | None = None) -> None:
    """429 `model_budget_exhausted` when the owner has spent today's budget, with a Retry-After
    of the seconds until it renews."""
    now = now or timezone.now()
    budget = client_limit(client=owner, limit="model_tokens_per_day")
    if not budget:
        return
    spent = model_tokens_spent(owner_id=owner.pk, day=budget_day(now))
    if spent < budget:
        return
    renews_at = next_budget_day_at(now)
    telemetry.model_budget_refused(where="submit")
    raise TooManyRequests(
        _message(spent, budget, now),
        code="model_budget_exhausted",
        details={
            "tokens_spent": spent,
            "tokens_per_day": budget,
            "renews_at": renews_at.isoformat(),
        },
        headers={"Retry-After": str(ceiling_seconds((renews_at - now).total_seconds()))},
    )


def model_budget_require_for_call(*, owner_id: uuid.UUID) -> None:
    """JobFailed `model_budget_exhausted` when the owner has spent today's budget: not retryable,
    since no run before midnight would do better and each would spend a run of the job."""
    now = timezone.now()
    budget, spent = _budget_and_spent(owner_id, budget_day(now))
    if budget and spent >= budget:
        telemetry.model_budget_refused(where="run")
        raise JobFailed("model_budget_exhausted", _message(spent, budget, now), retryable=False)


def model_usage_record(*, owner_id: uuid.UUID, tokens: int, now: datetime | None = None) -> None:
    """Add one model call's tokens to the owner's usage of the day (recorded with no budget
    too, for the operator to see)."""
    if tokens > 0:
        sql.model_usage_add(owner_id, day=budget_day(now or timezone.now()), tokens=tokens)


def model_usage_prune(*, before: date, batch_size: int, max_batches: int) -> int:
    """Delete usage rows of days before `before`; only today's is ever read. No index serves the
    day alone: the table holds a few rows per client, and a scan of it costs less than one more
    index written on every model call."""
    old = ModelUsage.objects.filter(day__lt=before)
    return delete_in_batches(old, batch_size=batch_size, max_batches=max_batches)
