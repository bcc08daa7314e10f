"""Writes for clients and API keys."""
from __future__ import annotations

import secrets
import uuid

import tenacity
from django.db import IntegrityError, OperationalError, transaction
from django.utils import timezone

from core.auth import API_KEY_PREFIX, api_key_digest, api_key_forget
from core.db import DEADLOCK_DETECTED, constraints_checked_at_once, sqlstate, statements_unbounded
from core.models import ApiKey, Client


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
    for attempt in tenacity.Retrying(retry=tenacity.retry_if_exception(_deletion_may_try_again),
                                     stop=tenacity.stop_after_attempt(DELETE_TRIES), reraise=True):
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
