"""The Redis behind CACHE_URL, for what the processes share beside the cache itself: the rate
limits' counts (core/throttling.py) and the receivers' delivery slots (webhooks/sending.py)."""
from __future__ import annotations

from typing import Any

import redis
from django.conf import settings

_SCHEMES = ("redis://", "rediss://", "unix://")


def configured() -> bool:
    """Whether CACHE_URL is a Redis (not `make run`'s embedded file cache)."""
    return str(settings.CACHE_URL).startswith(_SCHEMES)


def client(**options: Any) -> redis.Redis:
    """A client with short timeouts: a hung Redis must not stall a request or a delivery (what
    uses it admits instead)."""
    return redis.Redis.from_url(settings.CACHE_URL, socket_timeout=1, socket_connect_timeout=1, **options)
