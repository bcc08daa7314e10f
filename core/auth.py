"""Bearer API-key authentication: one indexed lookup per request."""
from __future__ import annotations

from rest_framework import authentication, exceptions
from rest_framework.request import Request

from core.models import ApiKey, Client
from core.services import api_key_digest


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <key>`; request.user becomes the key's Client."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Client, ApiKey] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, key = header.partition(" ")
        if scheme.lower() != self.keyword.lower() or not key.strip():
            raise exceptions.AuthenticationFailed("Send the API key as 'Authorization: Bearer <key>'.")
        api_key = (
            ApiKey.objects.select_related("client")
            .filter(digest=api_key_digest(key.strip()), revoked_at__isnull=True)
            .first()
        )
        if api_key is None:
            raise exceptions.AuthenticationFailed("Unknown or revoked API key.")
        return api_key.client, api_key

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 (with WWW-Authenticate) rather than 403 to a request without a key.
        return self.keyword
