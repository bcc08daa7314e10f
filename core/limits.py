"""A client's limits: the operator's override on its row (core.models.Client, set in the admin)
or, where it has none, the setting every client shares. 0 means no limit either way."""
from __future__ import annotations

from typing import Literal

from django.conf import settings

from core.models import Client

Limit = Literal["submit_rate_per_minute", "read_rate_per_minute", "max_unfinished_jobs", "model_tokens_per_day"]

# The Client field -> the setting it overrides.
LIMIT_SETTINGS: dict[Limit, str] = {
    "submit_rate_per_minute": "API_SUBMIT_RATE_PER_MINUTE",
    "read_rate_per_minute": "API_READ_RATE_PER_MINUTE",
    "max_unfinished_jobs": "JOB_MAX_UNFINISHED_PER_CLIENT",
    "model_tokens_per_day": "MODEL_TOKENS_PER_CLIENT_PER_DAY",
}


def limit_default(limit: Limit) -> int:
    """What a client without an override of `limit` gets: its setting."""
    return int(getattr(settings, LIMIT_SETTINGS[limit]))


def client_limit(*, client: Client, limit: Limit) -> int:
    """The client's `limit`, from the row as loaded (no query)."""
    override: int | None = getattr(client, limit)
    return limit_default(limit) if override is None else override
