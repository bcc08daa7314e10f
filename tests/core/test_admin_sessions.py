"""A staff session (the admin, the console) lasts a working day, not Django's two weeks; its
cookie goes when the browser closes and no script or other site reads or sends it; and a
password change ends the user's other sessions."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.test import Client as HttpClient
from django.utils import timezone

from tests.conftest import signed_in_browser

pytestmark = pytest.mark.django_db


def signed_in(password: str = "correct-pw-1") -> HttpClient:
    return signed_in_browser("admin", password)


@pytest.fixture
def operator(settings: Any) -> None:
    settings.ADMIN_LOGIN_RATE_PER_MINUTE = 10
    User.objects.create_superuser("admin", "admin@example.com", "correct-pw-1")


@pytest.mark.usefixtures("operator")
def test_a_staff_session_lasts_twelve_hours_in_a_cookie_that_goes_with_the_browser() -> None:
    browser = signed_in()

    cookie = browser.cookies["sessionid"]
    session = Session.objects.get(session_key=cookie.value)
    assert abs(session.expire_date - (timezone.now() + timedelta(hours=12))) < timedelta(minutes=1)
    # A session cookie (no expiry): gone when the browser closes
    assert not cookie["max-age"] and not cookie["expires"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["secure"]


@pytest.mark.usefixtures("operator")
def test_a_staff_session_ends_twelve_hours_after_its_sign_in_however_it_is_used() -> None:
    # Given an operator signed in, watching the console and the admin all day
    browser = signed_in()
    session = Session.objects.get(session_key=browser.cookies["sessionid"].value)
    for page in ["/console/", "/admin/", "/admin/jobs/job/", "/console/"]:
        assert browser.get(page).status_code == 200

    # Then the session's end has not moved
    assert Session.objects.get(pk=session.pk).expire_date == session.expire_date
    # And once it is reached, the next page asks for the login again
    Session.objects.filter(pk=session.pk).update(expire_date=timezone.now() - timedelta(seconds=1))
    assert browser.get("/console/")["Location"].startswith("/admin/login/")


@pytest.mark.usefixtures("operator")
def test_a_password_change_ends_the_users_other_sessions() -> None:
    # Given the operator signed in on a shared machine and at the desk
    shared, desk = signed_in(), signed_in()

    # When the operator changes the password at the desk
    changed = desk.post("/admin/password_change/", {
        "old_password": "correct-pw-1", "new_password1": "fresh-pw-2-long", "new_password2": "fresh-pw-2-long",
    })

    # Then the shared machine's session is over, and the desk's goes on
    assert changed.status_code == 302
    assert shared.get("/admin/").status_code == 302
    assert shared.get("/admin/")["Location"].startswith("/admin/login/")
    assert desk.get("/admin/").status_code == 200
    assert signed_in("fresh-pw-2-long")
