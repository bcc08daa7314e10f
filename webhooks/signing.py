"""Standard Webhooks signing: secrets and the `webhook-*` headers for one attempt."""
from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"


def secret_generate() -> str:
    """A new signing secret: "whsec_" + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def signature(*, secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`, keyed by the decoded secret.

    The receivers' own library signs, so what we send is what they verify. It takes the body
    as text: our bodies are UTF-8 JSON, so decoding and its re-encoding give the same bytes.
    """
    return Webhook(secret).sign(
        msg_id=message_id,
        timestamp=datetime.fromtimestamp(timestamp, tz=UTC),
        data=body.decode("utf-8"),
    )


def headers_sign(
    *, secrets_in_use: Sequence[str], message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers; one signature per secret, space-separated."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            signature(secret=secret, message_id=message_id, timestamp=timestamp, body=body)
            for secret in secrets_in_use
        ),
    }
