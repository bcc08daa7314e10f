"""What a staff user may do in the admin follows the permissions given: one who may only view
API keys sees them and revokes none."""
from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client as BrowserClient

from core.models import ApiKey
from tests.conftest import Api

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_staff_user_who_may_only_view_keys_cannot_revoke_one(make_api: Callable[..., Api]) -> None:
    # Given a client whose key works, and a staff user allowed to view API keys and nothing more
    api = make_api()
    key = ApiKey.objects.get(client=api.client)
    clerk = User.objects.create_user("clerk", is_staff=True)
    clerk.user_permissions.add(Permission.objects.get(codename="view_apikey"))
    browser = BrowserClient()
    browser.force_login(clerk)
    assert browser.get("/admin/core/apikey/").status_code == 200

    # When that user sends the list's "revoke" action for the key
    browser.post("/admin/core/apikey/", {"action": "revoke", "_selected_action": [key.pk]})

    # Then the key still works, and the action is not offered
    key.refresh_from_db()
    assert key.revoked_at is None
    assert api.get("/api/jobs/").status_code == 200
    assert b'value="revoke"' not in browser.get("/admin/core/apikey/").content


def test_a_staff_user_who_may_change_keys_revokes_one(make_api: Callable[..., Api]) -> None:
    api = make_api()
    key = ApiKey.objects.get(client=api.client)
    operator = User.objects.create_user("operator", is_staff=True)
    operator.user_permissions.add(*Permission.objects.filter(codename__in=["view_apikey", "change_apikey"]))
    browser = BrowserClient()
    browser.force_login(operator)

    browser.post("/admin/core/apikey/", {"action": "revoke", "_selected_action": [key.pk]})

    key.refresh_from_db()
    assert key.revoked_at is not None
    assert api.get("/api/jobs/").status_code == 401
