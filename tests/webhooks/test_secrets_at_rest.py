"""Signing secrets encrypted at rest (webhooks/sealing.py): the column holds no secret, the API
and the deliveries still use it, a rotation of SECRET_KEY keeps it readable through
SECRET_KEY_FALLBACKS and `manage.py signing_secrets_reencrypt`, and a secret no key opens fails
its own deliveries and its API read, clearly, and nothing else."""
from __future__ import annotations

import logging
import uuid
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import override_settings
from django.utils import timezone
from standardwebhooks import Webhook

from core.services import client_create
from examples.receiver import Receiver
from tests.conftest import Api
from tests.webhooks.conftest import HELLO, secret_of
from tests.webhooks.test_delivery_claims import make_delivery
from webhooks import attempts, sealing, secrets, signing
from webhooks.models import DeliveryAttempt, SigningSecret

NEW_KEY = "the-new-secret-key-after-a-rotation"


def stored() -> list[str]:
    """The column as a backup or a replica holds it."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT secret FROM {SigningSecret._meta.db_table}")
        return [row[0] for row in cursor.fetchall()]


def assert_none_holds(secret: str) -> None:
    key_text = secret.removeprefix("whsec_")
    assert all(key_text not in value and "whsec_" not in value for value in stored())


def call_command_output(name: str) -> str:
    out = StringIO()
    call_command(name, stdout=out)
    return out.getvalue().strip()


def test_the_column_holds_no_secret_and_deliveries_verify_against_the_api_s(api: Api, receiver: Receiver) -> None:
    # Given a client's secret, rotated, and an endpoint's, all through the API
    old = secret_of(api)
    new = api.post("/api/webhook-secret/rotate/").json()["secret"]
    endpoint = api.post("/api/webhook-endpoints/", json={"url": receiver.url, "event_types": ["job.succeeded"]}).json()
    endpoint_secret = api.get(f"/api/webhook-endpoints/{endpoint['id']}/secret/").json()["secret"]

    # Then the column holds none of them, in whole or in part
    assert len(stored()) == 3
    for secret in (old, new, endpoint_secret):
        assert secret.startswith("whsec_")
        assert_none_holds(secret)
    # ...the API still shows each its plaintext
    assert secret_of(api) == new
    assert api.get(f"/api/webhook-endpoints/{endpoint['id']}/secret/").json()["secret"] == endpoint_secret

    # ...and the worker signs with them: the callback with both of the client's, the endpoint's with its own
    api.submit(HELLO, callback_url=receiver.url)
    received = receiver.wait_for(2)
    [callback] = [r for r in received if len(r.headers["webhook-signature"].split(" ")) == 2]
    [endpoints_own] = [r for r in received if r is not callback]
    Webhook(new).verify(callback.body, callback.headers)
    Webhook(old).verify(callback.body, callback.headers)
    Webhook(endpoint_secret).verify(endpoints_own.body, endpoints_own.headers)


def test_a_rotation_of_secret_key_reads_through_the_fallback_until_reencrypted(api: Api, settings: Any) -> None:
    # Given secrets stored under the current SECRET_KEY
    old_key = settings.SECRET_KEY
    rotated_out = secret_of(api)
    current = api.post("/api/webhook-secret/rotate/").json()["secret"]
    before = sorted(stored())

    # When the operator rotates SECRET_KEY, the previous one kept among the fallbacks
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = NEW_KEY, [old_key]

    # Then the secrets still read, and the command moves every row to the new key
    assert secret_of(api) == current
    out = call_command_output("signing_secrets_reencrypt")
    assert out == "Re-encrypted 2 signing secret(s) under the current SECRET_KEY."
    assert set(stored()).isdisjoint(before)
    assert call_command_output("signing_secrets_reencrypt") == (
        "Re-encrypted 0 signing secret(s) under the current SECRET_KEY."
    )

    # ...after which the previous key may go: both secrets read, the one in its overlap too
    settings.SECRET_KEY_FALLBACKS = []
    assert secret_of(api) == current
    in_use = secrets.signing_secrets_in_use(owner_id=api.client.pk, endpoint_id=None, now=timezone.now())
    assert [sealing.unseal(token) for token in in_use] == [current, rotated_out]


def test_a_secret_the_previous_release_stored_as_is_reads_until_the_command_seals_it(api: Api) -> None:
    # Given a current secret written as is, by a process of the previous release while the
    # upgrade's migration ran
    secret_of(api)
    plain = signing.secret_generate()
    SigningSecret.objects.filter(owner=api.client, expires_at__isnull=True).update(secret=plain)

    # Then it is read (and signs) as it is, and the command seals it
    assert secret_of(api) == plain
    assert call_command_output("signing_secrets_reencrypt") == (
        "Re-encrypted 1 signing secret(s) under the current SECRET_KEY."
    )
    assert_none_holds(plain)
    assert secret_of(api) == plain


def test_a_secret_no_key_opens_is_a_clear_api_error(api: Api, settings: Any, caplog: pytest.LogCaptureFixture) -> None:
    # Given a secret stored under a SECRET_KEY since dropped without a fallback
    secret_of(api)
    settings.SECRET_KEY = NEW_KEY

    # When its client reads it
    with caplog.at_level(logging.ERROR, logger="webhooks.secrets"):
        response = api.get("/api/webhook-secret/")

    # Then the answer says what is wrong, and the log the cause
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "signing_secret_unreadable"
    assert "SECRET_KEY_FALLBACKS" in caplog.text
    # ...and rotating it away at once gives a new secret that reads
    rotated = api.post("/api/webhook-secret/rotate/", json={"expire_previous_now": True})
    assert rotated.status_code == 200 and secret_of(api) == rotated.json()["secret"]


@pytest.mark.django_db(transaction=True)
def test_a_secret_no_key_opens_fails_its_own_delivery_not_its_batch(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    # Given two clients' deliveries due together, one whose secret was sealed under a key
    # since dropped without a fallback
    lost, kept = (client_create(name=f"at-rest-{uuid.uuid4().hex[:8]}") for _ in range(2))
    with override_settings(SECRET_KEY="a-key-dropped-since"):
        secrets.signing_secret_get_or_create(owner_id=lost.pk)
    secret = secrets.signing_secret_get_or_create(owner_id=kept.pk)
    unreadable, readable = make_delivery(lost, receiver.url), make_delivery(kept, receiver.url)

    # When a worker claims them as one batch
    with caplog.at_level(logging.ERROR, logger="webhooks.attempts"):
        outcomes = attempts.deliveries_attempt(delivery_ids=[unreadable.pk, readable.pk])

    # Then the other client's is delivered, signed with its secret
    assert {outcome.delivery_id for outcome in outcomes} == {unreadable.pk, readable.pk}
    [received] = receiver.wait_for(1)
    Webhook(secret).verify(received.body, received.headers)
    # ...and the unreadable one's attempt is an internal error, not sent, with the cause logged
    attempt = DeliveryAttempt.objects.get(delivery=unreadable)
    assert attempt.error == attempts.UNREADABLE_SECRET and attempt.status_code is None
    assert f"Delivery {unreadable.pk}: not sent" in caplog.text and "SECRET_KEY_FALLBACKS" in caplog.text

