"""Which callback URLs a client may give: the private-network guard, as a 400 for the API."""
from __future__ import annotations

from core import http
from core.errors import ApplicationError


def callback_url_validate(*, url: str, resolver: http.Resolver | None = None) -> None:
    """Refuse (400) a callback URL that is malformed or reaches a non-public address."""
    try:
        http.url_check(url, resolver=resolver)
    except http.UrlRefused as exc:
        raise ApplicationError(
            f"callback_url is not allowed: {exc.reason}",
            code="invalid_callback_url",
            details={"callback_url": [exc.reason]},
        ) from None
