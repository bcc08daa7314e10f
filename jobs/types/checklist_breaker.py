"""The model provider's circuit breaker, shared through Redis by every worker process: after
OPENAI_BREAKER_FAILURES tries in a row failed as the provider failing (timeouts, lost
connections, 5xx), each within OPENAI_BREAKER_WINDOW_SECONDS of the first, checklist model calls
fail at once, unsent, for OPENAI_BREAKER_COOLDOWN_SECONDS (the job fails
`model_provider_unavailable`); then one call, the probe, is let through while the others still
fail at once: answered, the breaker closes; failed, it opens for another cool-down.

In an outage every try waited its whole OPENAI_TIMEOUT_SECONDS, OPENAI_MAX_ATTEMPTS times, so
several clients' checklist jobs held every process of the shared `jobs` workers for minutes,
short jobs waiting behind them.

A few Redis keys, not a library: pybreaker, whose CircuitRedisStorage would share its state, is
not among the service's dependencies, and what it would store is these four keys. A Redis out
of reach, or no Redis (`make run`'s file cache), lets every call through: the job goes on as
without a breaker (one WARNING line a call; a hung Redis adds its 1 s timeout before and after
each try).
"""
from __future__ import annotations

import logging
import math

import openai
import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

from core import cache_redis

logger = logging.getLogger(__name__)

# The breaker's keys (named apart per deployment and test run, as the due queue's are):
# failures in a row (expire with their window), open (expires with the cool-down), tripped (it
# opened since it last closed: the next call is a probe; expires a window after the cool-down,
# so a breaker no call probed by then closes), probe (the probe's lease).
KEYS = _FAILURES, _OPEN, _TRIPPED, _PROBE = (
    "model-breaker:failures", "model-breaker:open", "model-breaker:tripped", "model-breaker:probe",
)

_client: redis.Redis | None = None


class ProviderUnavailable(openai.OpenAIError):
    """The breaker is open: the call is not sent (checklist_failures.job_failure)."""


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


def before_call() -> bool:
    """Raises ProviderUnavailable while the breaker is open, or half open with its probe under
    way; returns whether this call is the probe."""
    if not _enabled():
        return False
    try:
        client = _redis()
        open_ms, tripped = client.pipeline(transaction=False).pttl(_key(_OPEN)).exists(_key(_TRIPPED)).execute()
        if open_ms > 0:
            raise ProviderUnavailable(
                f"The model provider failed {settings.OPENAI_BREAKER_FAILURES} tries in a row; checklist "
                f"model calls are not sent to it for {math.ceil(open_ms / 1000)} s more."
            )
        if not tripped:
            return False
        # Twice the timeout: a read begun just before it may wait as long again.
        lease_seconds = math.ceil(2 * settings.OPENAI_TIMEOUT_SECONDS) + 5
        if client.set(_key(_PROBE), 1, nx=True, ex=lease_seconds):
            return True
    except redis.RedisError as error:
        logger.warning("Model breaker: Redis out of reach (%s); the model call is made", error)
        return False
    raise ProviderUnavailable(
        "The model provider failed its last tries; one call is trying it again, and checklist "
        "model calls are not sent to it until that one is answered."
    )


def after_call(*, probe: bool, error: BaseException | None) -> None:
    """Records a try's outcome: answered (whatever the answer is worth) closes the breaker; the
    provider failing counts a failure in a row, and opens it at the threshold (the probe's at once)."""
    if not _enabled():
        return
    try:
        client = _redis()
        if error is None or not is_provider_failure(error):
            client.delete(_key(_FAILURES), _key(_TRIPPED), _key(_PROBE))
            return
        if not probe:
            failures, _ = (client.pipeline(transaction=True).incr(_key(_FAILURES))
                           .expire(_key(_FAILURES), settings.OPENAI_BREAKER_WINDOW_SECONDS, nx=True).execute())
            if failures < settings.OPENAI_BREAKER_FAILURES:
                return
        cooldown = settings.OPENAI_BREAKER_COOLDOWN_SECONDS
        (client.pipeline(transaction=True).set(_key(_OPEN), 1, ex=cooldown)
         .set(_key(_TRIPPED), 1, ex=cooldown + settings.OPENAI_BREAKER_WINDOW_SECONDS)
         .delete(_key(_FAILURES), _key(_PROBE)).execute())
        logger.warning("Model breaker: open for %s s, the provider failing (%s)", cooldown, type(error).__name__)
    except redis.RedisError as unreachable:
        logger.warning("Model breaker: Redis out of reach (%s); the try's outcome is not recorded", unreachable)
