"""API keys: created by a management command, stored as a digest, revocable."""
from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from core.auth import api_key_digest
from core.models import ApiKey, Client

pytestmark = pytest.mark.django_db


def create_key(*args: str) -> str:
    out = io.StringIO()
    call_command("create_api_key", *args, stdout=out)
    return out.getvalue()


def test_create_api_key_json_prints_name_and_a_key_stored_only_as_digest() -> None:
    printed = json.loads(create_key("acme", "--json"))

    assert printed["name"] == "acme"
    key = printed["key"]
    assert len(key) > 40
    stored = ApiKey.objects.get(client__name="acme")
    assert stored.digest == api_key_digest(key)
    assert key not in {stored.digest, stored.prefix}


def test_a_second_key_needs_add_and_both_work() -> None:
    first = json.loads(create_key("acme", "--json"))["key"]
    with pytest.raises(CommandError):
        create_key("acme")

    second = json.loads(create_key("acme", "--add", "--json"))["key"]

    assert first != second
    assert Client.objects.get(name="acme").api_keys.count() == 2


def test_revoke_api_key_by_prefix() -> None:
    key = json.loads(create_key("acme", "--json"))["key"]

    call_command("revoke_api_key", key, stdout=io.StringIO())

    assert ApiKey.objects.get().revoked_at is not None


def test_an_empty_name_is_refused_and_creates_no_client() -> None:
    # (`create_api_key "$NAME"` with NAME unset in the operator's shell)
    with pytest.raises(CommandError, match="NAME is empty"):
        create_key(" ")

    assert not Client.objects.exists()
