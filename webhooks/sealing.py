"""Signing secrets encrypted at rest: a database backup, a replica or a dump does not give away
the keys that sign every client's webhooks.

Fernet (AES-128-CBC and HMAC-SHA256, from `cryptography`), keyed from Django's SECRET_KEY, and
Django's own rotation of it: a secret is sealed under SECRET_KEY's key and opened under it or
any of SECRET_KEY_FALLBACKS' until `manage.py signing_secrets_reencrypt` has moved every row to
the current key (docs/deployment.md). Each key is derived (HKDF, with this purpose's label) so
that it is neither SECRET_KEY itself nor any other use's key derived from it. Opening one costs
about 10 µs, per secret and attempt (signing with it about 9 µs): no cache.
"""
from __future__ import annotations

import base64
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

from webhooks.signing import SECRET_PREFIX

PURPOSE = b"jobapi webhooks signing secret at rest v1"


class SecretUnreadable(Exception):
    """A stored secret that no key opens: SECRET_KEY was changed without the previous one in
    SECRET_KEY_FALLBACKS (or the row was altered)."""

    def __init__(self) -> None:
        super().__init__(
            "a webhook signing secret cannot be decrypted with SECRET_KEY or any of SECRET_KEY_FALLBACKS "
            "(SECRET_KEY changed without the previous one among the fallbacks?)"
        )


def _key(secret_key: str) -> Fernet:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=PURPOSE).derive(secret_key.encode())
    return Fernet(base64.urlsafe_b64encode(derived))


@lru_cache(maxsize=4)
def _keys(secret_key: str, fallbacks: tuple[str, ...]) -> tuple[MultiFernet, Fernet]:
    current = _key(secret_key)
    return MultiFernet([current, *(_key(fallback) for fallback in fallbacks)]), current


def _settings_keys() -> tuple[MultiFernet, Fernet]:
    # Read each time (the cache keyed by their values): a test's override_settings takes effect.
    return _keys(settings.SECRET_KEY, tuple(settings.SECRET_KEY_FALLBACKS))


def seal(secret: str) -> str:
    """`secret` as stored: a Fernet token under SECRET_KEY's key."""
    return _settings_keys()[1].encrypt(secret.encode()).decode("ascii")


def unseal(token: str) -> str:
    """The secret a stored token holds. Raises SecretUnreadable when no key opens it. A secret
    stored as is (a token never starts "whsec_") is one the previous release's processes wrote
    while migration webhooks 0015 ran: read as it is, sealed by signing_secrets_reencrypt."""
    if token.startswith(SECRET_PREFIX):
        return token
    try:
        return _settings_keys()[0].decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable() from None


def sealed_again(token: str) -> str | None:
    """The token sealed under SECRET_KEY's key (a secret stored as is, sealed), or None when it
    is already. Raises SecretUnreadable when no key opens it."""
    every, current = _settings_keys()
    if token.startswith(SECRET_PREFIX):
        return seal(token)
    try:
        current.decrypt(token.encode())
        return None
    except InvalidToken:
        pass
    try:
        return every.rotate(token.encode()).decode("ascii")
    except InvalidToken:
        raise SecretUnreadable() from None
