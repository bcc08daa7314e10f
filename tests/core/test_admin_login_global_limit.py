"""The admin's failed logins are limited all together too, every address and username: a botnet
posting random usernames, each address and each username under its own limit, had each POST
hash a password (about 0.25 s of CPU on the API's processors) and could slow every client's
requests. Past the limit no password is hashed, the operators' browsers that signed in before
still sign in, and a POST one limit refuses spends no other's budget."""
from __future__ import annotations

import logging
import re
import uuid
from typing import Any, ClassVar

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import User
from django.test import Client as HttpClient

from core import admin_login as admin_login_module
from core import log_volume
from core.admin_login import DEVICE_COOKIE, DEVICE_FAILURES_PER_HOUR
from tests.conftest import admin_login, random_address, signed_in_browser

pytestmark = pytest.mark.django_db


class CountingHasher(PBKDF2PasswordHasher):
    """Django's default hasher, counting the passwords it hashes (a check hashes the one tried;
    a login to a username that does not exist hashes it too, to take as long)."""

    hashed: ClassVar[list[str]] = []

    def encode(self, password: str, salt: str, iterations: int | None = None) -> str:
        CountingHasher.hashed.append(password)
        return super().encode(password, salt, iterations)


def attempt(username: str, password: str, *, client: HttpClient | None = None, address: str | None = None) -> int:
    """The status of one login through the proxy, from an address of its own unless given."""
    return admin_login(username, password, browser=client, forwarded_for=address or random_address()).status_code


def anyone() -> str:
    """A username nobody has, a botnet's random one."""
    return f"nobody-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def operator(settings: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """An operator of this test's own, a limit of five failed logins a minute all together (in a
    count of this test's own: every run's tests share the limiter's Redis), ten per address and
    five per username; and the passwords hashed, counted."""
    settings.ADMIN_LOGIN_RATE_PER_MINUTE = 10
    settings.ADMIN_LOGIN_FAILURES_PER_USERNAME_PER_HOUR = 5
    settings.ADMIN_LOGIN_FAILURES_PER_MINUTE = 5
    settings.PASSWORD_HASHERS = [f"{__name__}.CountingHasher"]
    monkeypatch.setattr(admin_login_module.AdminLoginGlobalRateThrottle, "scope", f"admin_login_all-{uuid.uuid4()}")
    monkeypatch.setattr(CountingHasher, "hashed", [])
    username = f"op-{uuid.uuid4().hex[:12]}"
    User.objects.create_superuser(username, "op@example.com", "correct-pw")
    return username


def signed_in_before(username: str) -> HttpClient:
    """A browser that signed in as `username` before, and signed out since."""
    browser = signed_in_browser(username, "correct-pw")
    browser.post("/admin/logout/")
    return browser


def test_past_the_limit_no_password_is_hashed(operator: str, django_assert_num_queries: Any) -> None:
    # When a botnet posts random usernames, each from an address of its own (under both their limits)
    statuses = [attempt(anyone(), "guess") for _ in range(5)]
    hashed = len(CountingHasher.hashed)

    # Then the sixth is refused, before any query or hash: a fresh address and username too,
    # and the operator's right password, never checked
    assert statuses == [200] * 5 and hashed >= 5
    with django_assert_num_queries(0):
        refused = admin_login(anyone(), "guess", forwarded_for=random_address())
    assert refused.status_code == 429
    assert attempt(operator, "correct-pw") == 429
    assert len(CountingHasher.hashed) == hashed

    # With the words and Retry-After of the other limits' refusals
    assert re.fullmatch(rb"Too many failed login attempts on this site; try again in [0-9]+ s\.", refused.content)
    assert refused["Content-Type"] == "text/plain; charset=utf-8"
    assert 0 < int(refused["Retry-After"]) <= 120


def test_a_browser_that_signed_in_before_still_signs_in(operator: str) -> None:
    # Given the operator's browser, which signed in yesterday
    browser = signed_in_before(operator)

    # When a botnet spends everyone's failed logins
    assert [attempt(anyone(), "guess") for _ in range(6)][-1] == 429

    # Then the operator still signs in from that browser, typo and all; not from another one
    assert attempt(operator, "typo", client=browser) == 200
    assert attempt(operator, "correct-pw", client=browser) == 302
    assert attempt(operator, "correct-pw") == 429
    # Nor does that browser exempt a guess at another username
    assert attempt(anyone(), "guess", client=browser) == 429


def test_a_copy_of_the_cookie_exempts_a_botnet_for_a_few_failures_only(operator: str) -> None:
    # Given a copy of the cookie of the operator's browser (stolen), and everyone's failed logins spent
    copy = HttpClient()
    copy.cookies[DEVICE_COOKIE] = signed_in_before(operator).cookies[DEVICE_COOKIE].value
    assert [attempt(anyone(), "guess") for _ in range(6)][-1] == 429

    # When a botnet guesses at the operator's password with it, each guess from an address of its own
    guesses = [attempt(operator, f"guess-{n}", client=copy) for n in range(DEVICE_FAILURES_PER_HOUR)]
    hashed = len(CountingHasher.hashed)
    refused = admin_login(operator, "correct-pw", browser=copy, forwarded_for=random_address())

    # Then the cookie exempted its few failures, and no more: the next is refused as without it,
    # no password hashed
    assert guesses == [200] * DEVICE_FAILURES_PER_HOUR
    assert refused.status_code == 429
    assert re.fullmatch(rb"Too many failed login attempts on this site; try again in [0-9]+ s\.", refused.content)
    assert len(CountingHasher.hashed) == hashed


def test_successful_logins_do_not_count(operator: str) -> None:
    statuses = [attempt(operator, "correct-pw") for _ in range(6)]
    statuses += [attempt(anyone(), "guess") for _ in range(6)]

    assert statuses == [302] * 6 + [200] * 5 + [429]


def test_the_global_refusals_spend_neither_the_address_nor_the_username(operator: str, settings: Any) -> None:
    # Given everyone's failed logins spent
    assert [attempt(anyone(), "guess") for _ in range(6)][-1] == 429

    # When one address guesses at the operator's password, refused each time
    address = random_address()
    assert [attempt(operator, "guess", address=address) for _ in range(12)] == [429] * 12

    # Then, the global limit lifted, the username still has its five failures, and the address its ten
    settings.ADMIN_LOGIN_FAILURES_PER_MINUTE = 0
    assert [attempt(operator, "guess", address=address) for _ in range(6)] == [200] * 5 + [429]
    assert [attempt(anyone(), "guess", address=address) for _ in range(6)] == [200] * 5 + [429]


def test_the_narrower_refusals_do_not_spend_everyones(operator: str, settings: Any) -> None:
    settings.ADMIN_LOGIN_FAILURES_PER_MINUTE = 20

    # When one address spends its ten and is refused five more times, and a botnet spends the
    # operator's username's five and is refused five more times
    address = random_address()
    assert [attempt(anyone(), "guess", address=address) for _ in range(15)] == [200] * 10 + [429] * 5
    assert [attempt(operator, "guess") for _ in range(10)] == [200] * 5 + [429] * 5

    # Then everyone's count holds their 15 failures only: five more, then refused
    assert [attempt(anyone(), "guess") for _ in range(6)] == [200] * 5 + [429]


def test_the_refusals_are_told_in_one_warning_a_minute(
    operator: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    # Given the warning's minute on a clock of the test's own, and everyone's failed logins spent
    clock = [0.0]
    monkeypatch.setattr(admin_login_module, "_refusals", log_volume.CountedPerKey(clock=lambda: clock[0]))
    assert [attempt(anyone(), "guess") for _ in range(5)] == [200] * 5

    def warnings(count: int) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="core.admin_login"):
            assert [attempt(anyone(), "guess") for _ in range(count)] == [429] * count
        return [record.getMessage() for record in caplog.records if record.name == "core.admin_login"]

    # When 20 are refused, then one after the interval
    first = warnings(20)
    clock[0] += 60
    after = warnings(1)

    # Then the first is told at once, the next 19 with the one after the interval
    assert len(first) == 1 and "ADMIN_LOGIN_FAILURES_PER_MINUTE (5)" in first[0] and "; 1 refused 429" in first[0]
    assert len(after) == 1 and "; 20 refused 429" in after[0]


def test_a_browser_where_the_password_was_changed_still_signs_in(operator: str) -> None:
    # Given the operator's browser, where the operator changed the password (an attack seen,
    # say), and signed out since
    browser = signed_in_browser(operator, "correct-pw")
    changed = browser.post("/admin/password_change/", {
        "old_password": "correct-pw", "new_password1": "fresh-pw-4d1e-9c2a", "new_password2": "fresh-pw-4d1e-9c2a",
    })
    assert changed.status_code == 302
    browser.post("/admin/logout/")

    # When a botnet spends everyone's failed logins
    assert [attempt(anyone(), "guess") for _ in range(6)][-1] == 429

    # Then the operator still signs in from that browser: the new password voided the cookie of
    # the old one, and the browser that set it is given one of the new
    assert attempt(operator, "fresh-pw-4d1e-9c2a", client=browser) == 302
    assert attempt(operator, "fresh-pw-4d1e-9c2a") == 429


def change_on_user_admin(browser: HttpClient, username: str, password: str) -> None:
    """`username`'s password changed to `password` on the user admin's password page, in `browser`."""
    pk = User.objects.get(username=username).pk
    changed = browser.post(f"/admin/auth/user/{pk}/password/", {
        "usable_password": "true", "password1": password, "password2": password,
    })
    assert changed.status_code == 302 and changed["Location"] == f"/admin/auth/user/{pk}/change/"
    assert User.objects.get(username=username).check_password(password)


def test_a_browser_where_the_password_was_changed_on_the_user_admin_still_signs_in(operator: str) -> None:
    # Given the operator's browser, where the operator changed their own password on the user
    # admin's password page (not /admin/password_change/), and signed out since
    browser = signed_in_browser(operator, "correct-pw")
    change_on_user_admin(browser, operator, "fresh-pw-7b3f-1e8d")
    browser.post("/admin/logout/")

    # When a botnet spends everyone's failed logins
    assert [attempt(anyone(), "guess") for _ in range(6)][-1] == 429

    # Then the operator still signs in from that browser, given a cookie of the new password
    assert attempt(operator, "fresh-pw-7b3f-1e8d", client=browser) == 302
    assert attempt(operator, "fresh-pw-7b3f-1e8d") == 429


def test_changing_another_users_password_gives_no_cookie_of_that_user(operator: str) -> None:
    # Given a colleague, whose password the operator changes on the user admin's password page
    colleague = f"op-{uuid.uuid4().hex[:12]}"
    User.objects.create_superuser(colleague, "colleague@example.com", "colleague-pw")
    browser = signed_in_browser(operator, "correct-pw")
    change_on_user_admin(browser, colleague, "handed-pw-5c9a-2d7e")
    browser.post("/admin/logout/")

    # When a botnet spends everyone's failed logins
    assert [attempt(anyone(), "guess") for _ in range(6)][-1] == 429

    # Then the operator's browser is exempt for the operator only, not for the colleague
    assert attempt(colleague, "handed-pw-5c9a-2d7e", client=browser) == 429
    assert attempt(operator, "correct-pw", client=browser) == 302


def test_the_user_admins_page_changing_nothing_gives_no_cookie(operator: str) -> None:
    # Given a session of the operator in a browser without the device cookie (a session stolen,
    # say, and not the browser)
    browser = signed_in_browser(operator, "correct-pw")
    del browser.cookies[DEVICE_COOKIE]

    # When it posts the user admin's password page a form that changes nothing (Django's
    # "Conflicting form data" redirect)
    pk = User.objects.get(username=operator).pk
    answer = browser.post(f"/admin/auth/user/{pk}/password/", {"usable_password": "false"})

    # Then the password is the same, and no cookie is given
    assert answer.status_code == 302 and answer["Location"] == f"/admin/auth/user/{pk}/password/"
    assert User.objects.get(username=operator).check_password("correct-pw")
    assert DEVICE_COOKIE not in answer.cookies
