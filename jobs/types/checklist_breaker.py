"""The model provider's circuit breakers, shared through Redis by every worker process: one for
each client and one for the provider, each failing checklist model calls at once, unsent (the
job fails `model_provider_unavailable`), for OPENAI_BREAKER_COOLDOWN_SECONDS once it opens;
then one call, the probe, is let through while the others still fail at once: answered, the
breaker closes; failed, it opens for another cool-down.

A client's breaker opens after OPENAI_BREAKER_FAILURES of its own tries in a row failed as the
provider failing (timeouts, lost connections, 5xx, 408), each within
OPENAI_BREAKER_WINDOW_SECONDS of the first, and holds back that client's calls alone. The
provider's opens after as many tries in a row failed so, within the window, of at least two
clients, none counted for more than half of them (rounded up); it holds back every client's
calls; its probe failing opens the probing client's breaker, and the provider's again once the
probes of two clients failed. A provider may fail on one input (a timeout on the largest document, a 500 on some text):
when one client's failures opened the breaker for all, that client, sending such documents
again and again, kept every other client's checklist jobs failing `model_provider_unavailable`.
With a single client, its own breaker does the provider's work.

In an outage every try waited its whole OPENAI_TIMEOUT_SECONDS, OPENAI_MAX_ATTEMPTS times, so
several clients' checklist jobs held every process of the shared `jobs` workers for minutes,
short jobs waiting behind them.

A few Redis keys, not a library: pybreaker, whose CircuitRedisStorage would share its state, is
not among the service's dependencies, and it has no breaker opened by several callers. A Redis
out of reach, or no Redis (`make run`'s file cache), lets every call through: the job goes on
as without a breaker (one WARNING line a call; a hung Redis adds its 1 s timeout before and
after each try).
"""
from __future__ import annotations

import logging
import math
import uuid
from typing import NamedTuple

import openai
import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

from core import cache_redis

logger = logging.getLogger(__name__)

# Each breaker's keys (named apart per deployment and test run, as the due queue's are): failures
# in a row (expire with their window; the provider's, a hash of them by client), open (expires
# with the cool-down), tripped (it opened since it last closed: the next call is a probe; expires
# a window after the cool-down, so a breaker no call probed by then closes), probe (the probe's
# lease). The provider's are these; a client's are client_keys(its id).
KEYS = _FAILURES, _OPEN, _TRIPPED, _PROBE = (
    "model-breaker:failures", "model-breaker:open", "model-breaker:tripped", "model-breaker:probe",
)
# The fewest clients whose failures open the provider's breaker.
PROVIDER_CLIENTS = 2

_client: redis.Redis | None = None


class ProviderUnavailable(openai.OpenAIError):
    """A breaker is open: the call is not sent (checklist_failures.job_failure)."""


class Probes(NamedTuple):
    """Which breakers' probe a call is."""

    client: bool = False
    provider: bool = False


def client_keys(client_id: uuid.UUID) -> tuple[str, str, str, str]:
    """The names of a client's breaker's keys: failures, open, tripped, probe."""
    prefix = f"model-breaker:client:{client_id}:"
    return prefix + "failures", prefix + "open", prefix + "tripped", prefix + "probe"


def _keys(names: tuple[str, str, str, str]) -> tuple[str, str, str, str]:
    failures, open_, tripped, probe = names
    return _key(failures), _key(open_), _key(tripped), _key(probe)


def _redis() -> redis.Redis:
    """This process's client, made on first use; no retries, so a Redis down costs a call one
    refused connection, not redis-py's retries' seconds."""
    global _client
    if _client is None:
        _client = cache_redis.client(retry=Retry(NoBackoff(), 0))
    return _client


def _key(name: str) -> str:
    return cache_redis.queue_key(name)


def _enabled() -> bool:
    return settings.OPENAI_BREAKER_FAILURES > 0 and cache_redis.configured()


def is_provider_failure(error: BaseException) -> bool:
    """Whether a try's error says the provider is failing (not our request, nor its answer)."""
    if isinstance(error, openai.APIConnectionError):  # APITimeoutError is one too
        return True
    return isinstance(error, openai.APIStatusError) and (error.status_code >= 500 or error.status_code == 408)


def opens_for_all(failures_by_client: list[int]) -> bool:
    """Whether failures in a row (each client's count) open the provider's breaker: at least
    OPENAI_BREAKER_FAILURES, of at least PROVIDER_CLIENTS clients, none counted for more than
    half of them."""
    threshold = settings.OPENAI_BREAKER_FAILURES
    most = math.ceil(threshold / 2)
    return len(failures_by_client) >= PROVIDER_CLIENTS and sum(min(n, most) for n in failures_by_client) >= threshold


def before_call(*, client_id: uuid.UUID) -> Probes:
    """Raises ProviderUnavailable while the client's breaker or the provider's is open, or half
    open with its probe under way; returns which breakers' probe this call is."""
    if not _enabled():
        return Probes()
    _, client_open, client_tripped, client_probe = _keys(client_keys(client_id))
    try:
        client = _redis()
        provider_ms, provider_tripped, own_ms, own_tripped = (
            client.pipeline(transaction=False).pttl(_key(_OPEN)).exists(_key(_TRIPPED))
            .pttl(client_open).exists(client_tripped).execute())
        if own_ms > 0:
            raise ProviderUnavailable(
                f"The model provider failed this client's last {settings.OPENAI_BREAKER_FAILURES} tries in a "
                f"row; its checklist model calls are not sent to it for {math.ceil(own_ms / 1000)} s more."
            )
        if provider_ms > 0:
            raise ProviderUnavailable(
                f"The model provider failed {settings.OPENAI_BREAKER_FAILURES} tries in a row; checklist "
                f"model calls are not sent to it for {math.ceil(provider_ms / 1000)} s more."
            )
        if not (own_tripped or provider_tripped):
            return Probes()
        # Twice the timeout: a read begun just before it may wait as long again.
        lease_seconds = math.ceil(2 * settings.OPENAI_TIMEOUT_SECONDS) + 5
        probes = [key for tripped, key in ((own_tripped, client_probe), (provider_tripped, _key(_PROBE))) if tripped]
        leases = client.pipeline(transaction=False)
        for probe in probes:
            leases.set(probe, 1, nx=True, ex=lease_seconds)
        taken = leases.execute()
        if all(taken):
            return Probes(client=bool(own_tripped), provider=bool(provider_tripped))
        if held := [probe for probe, lease in zip(probes, taken, strict=True) if lease]:
            client.delete(*held)  # the other breaker's probe is another call: this one is not sent
    except redis.RedisError as error:
        logger.warning("Model breaker: Redis out of reach (%s); the model call is made", error)
        return Probes()
    raise ProviderUnavailable(
        "The model provider failed its last tries; one call is trying it again, and checklist "
        "model calls are not sent to it until that one is answered."
    )


def after_call(*, client_id: uuid.UUID, probes: Probes, error: BaseException | None) -> None:
    """Records a try's outcome: answered (whatever the answer is worth) closes the provider's
    breaker and the client's; the provider failing counts a failure in a row in both, and opens
    each at its threshold. A probe that fails opens its client's breaker at once, the provider's
    once the probes of two clients failed (so one client whose input fails cannot keep it open)."""
    if not _enabled():
        return
    own_keys = client_failures, _, client_tripped, client_probe = _keys(client_keys(client_id))
    window = settings.OPENAI_BREAKER_WINDOW_SECONDS
    try:
        client = _redis()
        if error is None or not is_provider_failure(error):
            client.delete(_key(_FAILURES), _key(_TRIPPED), _key(_PROBE), client_failures, client_tripped, client_probe)
            return
        _, _, by_client, own, _ = (
            client.pipeline(transaction=True).hincrby(_key(_FAILURES), str(client_id), 1)
            .expire(_key(_FAILURES), window, nx=True).hvals(_key(_FAILURES))
            .incr(client_failures).expire(client_failures, window, nx=True).execute())
        if probes.client or own >= settings.OPENAI_BREAKER_FAILURES or probes.provider:
            _open(client, own_keys, error, f"client {client_id}'s")
        if probes.provider:
            client.delete(_key(_PROBE))  # another client's call probes next
        opens = len(by_client) >= PROVIDER_CLIENTS if probes.provider else opens_for_all([int(n) for n in by_client])
        if opens:
            _open(client, _keys(KEYS), error, "every client's")
    except redis.RedisError as unreachable:
        logger.warning("Model breaker: Redis out of reach (%s); the try's outcome is not recorded", unreachable)


def _open(client: redis.Redis, keys: tuple[str, str, str, str], error: BaseException, whose: str) -> None:
    failures, open_, tripped, probe = keys
    cooldown = settings.OPENAI_BREAKER_COOLDOWN_SECONDS
    (client.pipeline(transaction=True).set(open_, 1, ex=cooldown)
     .set(tripped, 1, ex=cooldown + settings.OPENAI_BREAKER_WINDOW_SECONDS)
     .delete(failures, probe).execute())
    logger.warning("Model breaker: open for %s s for %s calls, the provider failing (%s)",
                   cooldown, whose, type(error).__name__)
