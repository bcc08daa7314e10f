"""Webhook writes: callback URL validation and recording job events for delivery."""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from core.errors import ApplicationError


def callback_url_validate(*, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApplicationError(
            "callback_url must be an absolute http(s) URL.",
            code="invalid_callback_url",
            details={"callback_url": ["Must be an absolute http or https URL."]},
        )


def job_event_record(*, job: Any, event_type: str) -> None:
    """Placeholder until the webhook delivery lands."""
