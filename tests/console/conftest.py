from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client as BrowserClient


@pytest.fixture
def staff() -> BrowserClient:
    """A browser logged in as an operator (staff, every permission)."""
    browser = BrowserClient()
    browser.force_login(User.objects.create_user("operator", is_staff=True, is_superuser=True))
    return browser
