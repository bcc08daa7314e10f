"""Writes for clients and API keys."""
from __future__ import annotations

import graphlib
import secrets
import time
import uuid
from collections.abc import Callable

import tenacity
from django.conf import settings
from django.db import IntegrityError, OperationalError, models, transaction
from django.utils import timezone

from core.auth import API_KEY_PREFIX, api_key_digest, api_key_forget
from core.db import (
    DEADLOCK_DETECTED,
    constraints_checked_at_once,
    delete_in_batches,
    sqlstate,
    statements_unbounded,
)
from core.models import ApiKey, Client
from core.signals import client_deletion_started


def client_create(*, name: str) -> Client:
    return Client.objects.create(name=name)


def client_lock(*, client_id: uuid.UUID) -> None:
    """Take the client's row lock until the transaction ends, so that one client's
    check-then-write (an endpoint under the cap, a secret's rotation) runs one at a time. It is
    FOR NO KEY UPDATE: the jobs and rows that reference the client (FOR KEY SHARE) are not
    held up by it."""
    list(Client.objects.select_for_update(no_key=True).filter(pk=client_id).values_list("pk", flat=True))


@transaction.atomic
def api_key_create(*, client: Client) -> str:
    """Create a key for `client` and return it; this is the only time the key is seen."""
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    ApiKey.objects.create(client=client, digest=api_key_digest(key), prefix=key[:12])
    return key


def api_key_revoke(*, api_key: ApiKey) -> None:
    ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    # Other processes stop accepting it within API_KEY_CACHE_SECONDS; this one at once.
    api_key_forget(digest=api_key.digest)


def api_key_delete(*, api_key: ApiKey) -> None:
    """Delete a key: refused at once in this process, as a revoked one is, and within
    API_KEY_CACHE_SECONDS in the others."""
    api_key.delete()
    api_key_forget(digest=api_key.digest)


# How many times a client's deletion is made before its IntegrityError (or deadlock) is raised
# (client_delete).
DELETE_TRIES = 3


def _deletion_may_try_again(exc: BaseException) -> bool:
    """Whether a try of a client's deletion failed on what a new try, reading again, gets past: a
    row added meanwhile (IntegrityError), or a deadlock PostgreSQL broke by aborting it."""
    if isinstance(exc, IntegrityError):
        return True
    return isinstance(exc, OperationalError) and sqlstate(exc) == DEADLOCK_DETECTED


def _tried_again() -> tenacity.Retrying:
    return tenacity.Retrying(retry=tenacity.retry_if_exception(_deletion_may_try_again),
                             stop=tenacity.stop_after_attempt(DELETE_TRIES), reraise=True)


def client_delete(*, client: Client) -> None:
    """Delete a client with all it owns (keys, jobs, results, deliveries). Its keys are forgotten
    as a deletion of each would be: a remembered one would go on authenticating the client that
    is no longer there (reads answering nothing). Other processes forget them within
    API_KEY_CACHE_SECONDS; meanwhile a submission (or another write) with one is refused 401 as
    an unknown key (core.auth.client_writes), not a 500 for its row's owner gone.

    The deletion reads what the client owns, deletes it, then the client. Its unfinished jobs
    are locked first, then the client, the order a job's transition takes them (its job's row,
    then, at commit, the client's, for the rows it adds: its events, its result): a transition
    under way commits first and what it added is read and deleted too; a later one waits, and
    finds its job gone. Unlocked, a worker's step that ended in between left rows the deletion
    had not read, and it failed at commit on their foreign keys, the client left in place. The
    writes that hold the client's endpoints or deliveries take the client's row first too, or
    leave a client being deleted alone (webhooks/sql.py owner_hold): taking it only at commit,
    they deadlocked with the deletion."""
    digests = list(ApiKey.objects.filter(client=client).values_list("digest", flat=True))
    # A worker's claim of one of its deliveries, between the deletion's reads and its deletes,
    # adds an attempt the deletion did not read: the deletion fails at commit on its foreign key,
    # undone as a whole, and is made again, reading it. Locking the deliveries first instead would
    # deadlock with an attempt's recording, which holds the attempt before its delivery. The
    # foreign keys are checked at each statement, not at commit: in a caller's transaction (the
    # admin's delete view runs in one) the commit is the caller's, past the retry, so the
    # violation was the operator's 500 and the client stayed.
    # A submission holds its owner's count row, then takes the client's row at its commit (its
    # job's foreign key), and the deletion, holding the client's row, deletes that count row: the
    # two deadlock, and PostgreSQL aborts the deletion (the first to wait). Tried again, it waits
    # for the client's row until the submission has committed, and reads and deletes its job too.
    client_id = client.pk
    for attempt in _tried_again():
        with attempt, transaction.atomic():
            statements_unbounded()  # all it owns, as many rows as it has
            constraints_checked_at_once()
            client.pk = client_id  # delete() cleared it before a failed try's commit
            list(client.jobs.filter(finished_at__isnull=True).order_by("pk").select_for_update()
                 .values_list("pk", flat=True))
            list(Client.objects.select_for_update().filter(pk=client.pk).values_list("pk", flat=True))
            client.delete()
    for digest in digests:
        api_key_forget(digest=digest)


# Rows of one kind a transaction of client_delete_in_batches deletes (with their own cascades: an
# event's deliveries, a delivery's attempts).
CLIENT_DELETE_BATCH_ROWS = 2_000


def client_delete_in_batches(*, client: Client, batch_rows: int = CLIENT_DELETE_BATCH_ROWS,
                             progress: Callable[[str, int], None] | None = None) -> None:
    """Delete a client of any size (client_delete) in bounded memory and short transactions: its
    keys revoked first, so that no new request gets in (other processes refuse them within
    API_KEY_CACHE_SECONDS), and its deliveries stopped (client_deletion_started), again once
    that has passed; then what it owns, kind by kind, `batch_rows` rows a transaction
    (`progress(kind, rows deleted so far)` after each); then the client with what is left (the
    rows added meanwhile, by a request already in, a job's transition, a delivery's attempt),
    by client_delete, in its lock order.

    Stopped midway (Ctrl-C, a crash), it leaves the client in place, its keys revoked, with
    fewer rows, each consistent: a batch is deleted whole or not at all. Run again, it finishes.

    Each batch locks its rows, skipping those a writer holds (a job's transition under way, an
    event's redelivery), for client_delete to take in its order; but not a delivery, which
    cascades to rows the client does not own (its attempts): an attempt's recording holds the
    attempt before its delivery, so locked first it deadlocked, as in client_delete. A batch that
    fails on a row added meanwhile, or on a deadlock, is made again, as client_delete is. The kinds go those that reference others
    first (a job's events, results and idempotency keys before the job; a delivery before its
    event and its endpoint), so that a batch's own cascade reads next to nothing. Not batched:
    the keys (client_delete forgets them) and the client's counts' row, which a submission holds
    before the client's."""
    for api_key in ApiKey.objects.filter(client=client, revoked_at__isnull=True):
        api_key_revoke(api_key=api_key)
    revoked_at = time.monotonic()
    _deliveries_stop(client)
    stopped_since_revoked = False
    for kind, relation, lock in _owned_in_order():
        owned = relation.related_model._default_manager.filter(**{relation.field.name: client}).order_by("pk")
        done = 0
        while True:
            if not stopped_since_revoked and time.monotonic() - revoked_at >= settings.API_KEY_CACHE_SECONDS:
                # Again once no process takes its keys: one that still did may have enabled an
                # endpoint, made one, or asked for a delivery (a job's callback_url) since.
                _deliveries_stop(client)
                stopped_since_revoked = True
            for attempt in _tried_again():
                with attempt:
                    deleted = delete_in_batches(owned, batch_size=batch_rows, max_batches=1, skip_locked=lock)
            if not deleted:
                break
            done += deleted
            if progress is not None:
                progress(kind, done)
    client_delete(client=client)


def _deliveries_stop(client: Client) -> None:
    """Nothing more goes to the client's receivers (its endpoints disabled, its deliveries
    canceled: webhooks/deletion.py, told by client_deletion_started); made again, as a batch
    is, past a deadlock."""
    for attempt in _tried_again():
        with attempt:
            client_deletion_started.send(sender=Client, client_id=client.pk)


def _owned_in_order() -> list[tuple[str, models.ForeignObjectRel, bool]]:
    """The client's cascading relations client_delete_in_batches deletes by batch, each with its
    kind's name (as the confirmations count them) and whether a batch locks its rows first (not
    when they cascade to rows the client does not own), those whose rows reference another's
    first."""
    relations = {
        relation.related_model: relation for relation in Client._meta.get_fields(include_hidden=True)
        if relation.auto_created and not relation.concrete and relation.on_delete is models.CASCADE
        and relation.related_model is not ApiKey and not relation.field.primary_key
    }
    # Dicts, not sets: the order is the same from run to run (a set of classes is ordered by their ids).
    referenced_by: dict[type[models.Model], dict[type[models.Model], None]] = {model: {} for model in relations}
    for model in relations:
        for field in model._meta.get_fields():
            if field.many_to_one and field.concrete and field.related_model in relations and field.related_model is not model:
                referenced_by[field.related_model][model] = None
    return [(str(model._meta.verbose_name_plural).capitalize(), relations[model],
             not any(child.on_delete is models.CASCADE and child.related_model not in relations
                     for child in model._meta.related_objects))
            for model in graphlib.TopologicalSorter(referenced_by).static_order()]
