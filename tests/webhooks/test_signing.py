"""The signer against the published Standard Webhooks vector, and multi-secret headers."""
from __future__ import annotations

import base64
import time

from standardwebhooks import Webhook

from webhooks.signing import headers_sign, secret_generate, signature

# The Standard Webhooks specification's published test vector (copied, not read from disk).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_MESSAGE_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_PAYLOAD = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signature_matches_the_published_vector() -> None:
    assert (
        signature(
            secret=VECTOR_SECRET,
            message_id=VECTOR_MESSAGE_ID,
            timestamp=VECTOR_TIMESTAMP,
            body=VECTOR_PAYLOAD,
        )
        == VECTOR_SIGNATURE
    )


def test_headers_carry_one_signature_per_secret_and_each_verifies() -> None:
    old, new = secret_generate(), secret_generate()
    body = '{"type":"job.succeeded","data":{"message":"héllo"}}'.encode()
    now = int(time.time())

    headers = headers_sign(secrets_in_use=[new, old], message_id="msg_1", timestamp=now, body=body)

    assert headers["webhook-id"] == "msg_1"
    assert headers["webhook-timestamp"] == str(now)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        assert Webhook(secret).verify(body, headers)["data"] == {"message": "héllo"}


def test_generated_secret_is_whsec_and_32_random_bytes() -> None:
    secret = secret_generate()

    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert secret_generate() != secret
