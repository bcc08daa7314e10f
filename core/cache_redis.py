"""The Redis behind CACHE_URL, for what the processes share beside the cache itself: the rate
limits' counts (core/throttling.py), the receivers' delivery slots (webhooks/sending.py), the
prunes' one-at-a-time slots (core/housekeeping.py), and the deliveries' due queue
(webhooks/dispatch.py)."""
from __future__ import annotations

from typing import Any

import redis
from django.conf import settings
from django.core.cache import cache
from redis.backoff import NoBackoff
from redis.retry import Retry

_SCHEMES = ("redis://", "rediss://", "unix://")


def configured() -> bool:
    """Whether CACHE_URL is a Redis (not `make run`'s embedded file cache)."""
    return str(settings.CACHE_URL).startswith(_SCHEMES)


def client(**options: Any) -> redis.Redis:
    """A client with short timeouts: a hung Redis must not stall a request or a delivery (what
    uses it admits instead)."""
    return redis.Redis.from_url(settings.CACHE_URL, socket_timeout=1, socket_connect_timeout=1, **options)


def queue_key(name: str) -> str:
    """The key of a list that hands work to the workers (the due queue): named apart as the
    broker's own queues are (CELERY_BROKER_KEY_PREFIX), so that services or test runs sharing
    one Redis never take each other's work."""
    prefix = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("global_keyprefix", "")
    return cache.make_key(f"{prefix}{name}")


_queue_client: redis.Redis | None = None


def queue_client() -> redis.Redis:
    """This process's client for those lists, made on first use (connecting then). No retries:
    what hands work over falls back at once to a message of its own when Redis is down, where
    redis-py's default retries would hold it (an event's commit) about 3 s each time."""
    global _queue_client
    if _queue_client is None:
        _queue_client = client(retry=Retry(NoBackoff(), 0))
    return _queue_client
