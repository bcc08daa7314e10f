"""The admin's failed logins are limited per username too, whatever the address: guesses at one
account spread over many addresses (a botnet, each address under its own limit) are stopped,
without telling which usernames exist, and without locking the account's owner out of a browser
that signed in before, nor for longer than the window."""
from __future__ import annotations

import logging
import random
import re
import time
import unicodedata
import uuid
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core import signing
from django.db import connection
from django.test import Client as HttpClient
from django.test.utils import CaptureQueriesContext

from core import admin_login as admin_login_module
from core import log_volume
from core.admin_login import DEVICE_COOKIE, DEVICE_FAILURES_PER_HOUR
from tests.conftest import admin_login, random_address, signed_in_browser

pytestmark = pytest.mark.django_db


def attempt(username: str, password: str, *, client: HttpClient | None = None) -> int:
    """The status of one login through the proxy, from an address of its own."""
    return admin_login(username, password, browser=client, forwarded_for=random_address()).status_code


def signed_in_before(username: str) -> HttpClient:
    """A browser that signed in as `username` before, and signed out since."""
    browser = signed_in_browser(username, "correct-pw")
    browser.post("/admin/logout/")
    return browser


@pytest.fixture
def operator(settings: Any) -> str:
    """An operator of a username this test's own (the counts live in Redis for an hour), and a
    limit of five failed logins a username an hour."""
    settings.ADMIN_LOGIN_RATE_PER_MINUTE = 10
    settings.ADMIN_LOGIN_FAILURES_PER_USERNAME_PER_HOUR = 5
    username = f"op-{uuid.uuid4().hex[:12]}"
    User.objects.create_superuser(username, "op@example.com", "correct-pw")
    return username


def test_guesses_at_one_username_from_many_addresses_are_limited(operator: str) -> None:
    # When a botnet guesses the operator's password, each guess from an address of its own
    statuses = [attempt(operator, f"guess-{n}") for n in range(6)]

    # Then the sixth is refused, the right password too: it is never checked
    assert statuses == [200] * 5 + [429]
    assert attempt(operator, "correct-pw") == 429


def test_the_usernames_refusals_do_not_spend_the_address(operator: str) -> None:
    # Given the operator's username's failed logins spent by a botnet
    assert [attempt(operator, "wrong") for _ in range(6)][-1] == 429

    # When one address guesses at it twelve times, refused each time, no password checked
    address = random_address()
    guesses = [admin_login(operator, "wrong", forwarded_for=address).status_code for _ in range(12)]

    # Then the address still has its ten failed logins for other usernames (an office whose
    # colleague's browser kept retrying a locked username is not locked out of the admin)
    others = [admin_login(f"nobody-{n}-{uuid.uuid4().hex[:12]}", "wrong", forwarded_for=address).status_code
              for n in range(11)]
    assert guesses == [429] * 12
    assert others == [200] * 10 + [429]


def test_the_refusal_does_not_tell_whether_the_username_exists(operator: str) -> None:
    nobody = f"nobody-{uuid.uuid4().hex[:12]}"

    real = [admin_login(operator, "wrong", forwarded_for=random_address()) for _ in range(6)]
    made_up = [admin_login(nobody, "wrong", forwarded_for=random_address()) for _ in range(6)]

    assert [r.status_code for r in real] == [r.status_code for r in made_up] == [200] * 5 + [429]
    # The same words for both (the seconds left aside: a second apart)
    assert re.sub(rb"[0-9]+", b"N", real[-1].content) == re.sub(rb"[0-9]+", b"N", made_up[-1].content) == (
        b"Too many failed login attempts for this username; try again in N s."
    )
    assert 0 < int(real[-1]["Retry-After"]) <= 2 * 3600


def test_a_browser_that_signed_in_as_the_user_before_is_not_locked_out(operator: str) -> None:
    # Given the operator's browser, which signed in yesterday
    browser = signed_in_before(operator)

    # When an attacker spends the username's failed logins
    assert [attempt(operator, "wrong") for _ in range(6)][-1] == 429

    # Then the operator still signs in from that browser, typo and all, and nobody else does:
    # not from another browser, nor from one that signed in as a colleague, nor with a forged cookie
    assert attempt(operator, "typo", client=browser) == 200
    assert attempt(operator, "correct-pw", client=browser) == 302
    assert attempt(operator, "correct-pw") == 429
    colleague = f"op-{uuid.uuid4().hex[:12]}"
    User.objects.create_superuser(colleague, "colleague@example.com", "colleague-pw")
    elsewhere = signed_in_browser(colleague, "colleague-pw")
    assert attempt(operator, "correct-pw", client=elsewhere) == 429
    forged = HttpClient()
    forged.cookies["admin_signed_in_as"] = signing.dumps(operator, salt="another")
    assert attempt(operator, "correct-pw", client=forged) == 429


def test_a_copy_of_the_cookie_exempts_a_botnet_for_a_few_failures_only(operator: str) -> None:
    # Given a copy of the cookie of the operator's browser (stolen), and the username's failed
    # logins spent
    copy = HttpClient()
    copy.cookies[DEVICE_COOKIE] = signed_in_before(operator).cookies[DEVICE_COOKIE].value
    assert [attempt(operator, "wrong") for _ in range(6)][-1] == 429

    # When a botnet guesses with it, each guess from an address of its own
    guesses = [attempt(operator, f"guess-{n}", client=copy) for n in range(DEVICE_FAILURES_PER_HOUR)]
    refused = admin_login(operator, "correct-pw", browser=copy, forwarded_for=random_address())

    # Then the cookie exempted its few failures, and no more: the next is refused as without it,
    # the right password unchecked (each address's ten a minute had been the botnet's before)
    assert guesses == [200] * DEVICE_FAILURES_PER_HOUR
    assert refused.status_code == 429
    assert re.sub(rb"[0-9]+", b"N", refused.content) == b"Too many failed login attempts for this username; try again in N s."


def test_the_browser_a_copy_was_spent_in_elsewhere_is_not_the_owners_other_browser(operator: str) -> None:
    # Given the operator's two browsers, a copy of one's cookie spent by a botnet, and the
    # username's failed logins spent
    laptop, phone = signed_in_before(operator), signed_in_before(operator)
    copy = HttpClient()
    copy.cookies[DEVICE_COOKIE] = laptop.cookies[DEVICE_COOKIE].value
    assert [attempt(operator, "guess", client=copy) for _ in range(DEVICE_FAILURES_PER_HOUR + 6)][-1] == 429

    # Then the operator still signs in from the other, after a couple of typos
    assert [attempt(operator, typo, client=phone) for typo in ("typo", "correct_pw")] == [200, 200]
    assert attempt(operator, "correct-pw", client=phone) == 302


def test_a_spent_copy_of_the_cookie_is_told_in_one_warning(operator: str, caplog: pytest.LogCaptureFixture) -> None:
    # Given a copy of the cookie of the operator's browser (stolen)
    cookie = signed_in_before(operator).cookies[DEVICE_COOKIE].value
    copy = HttpClient()
    copy.cookies[DEVICE_COOKIE] = cookie

    def warnings(guesses: int) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="core.admin_login"):
            assert [attempt(operator, "guess", client=copy) for _ in range(guesses)] == [200] * guesses
        return [record.getMessage() for record in caplog.records if record.name == "core.admin_login"]

    # When a botnet guesses with it: its five failures, the sixth past them, then two more
    spending, sixth, more = warnings(DEVICE_FAILURES_PER_HOUR), warnings(1), warnings(2)

    # Then the sixth is told in one WARNING naming the user, what it likely means and what to
    # do, and not the cookie; the next ones within the minute in none
    assert spending == [] and more == []
    assert len(sixth) == 1
    assert f"of staff user {operator} has failed DEVICE_FAILURES_PER_HOUR (5) logins" in sixth[0]
    assert "logins with a spent cookie of that user since this process's previous line: 1 " in sixth[0]
    assert "change that user's password, which voids every cookie of it" in sixth[0]
    assert cookie not in sixth[0] and cookie.split(":")[0] not in sixth[0]


def test_the_usernames_refusals_are_told_in_one_warning_a_minute_per_username(
    operator: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    # Given the warning's minute on a clock of the test's own, and two usernames' failed logins
    # spent by a botnet: the operator's, and an attacker's of a line break and 118 characters
    clock = [0.0]
    monkeypatch.setattr(admin_login_module, "_username_refusals", log_volume.CountedPerKey(clock=lambda: clock[0]))
    crafted = f"{uuid.uuid4().hex[:8]}\nfake line" + "x" * 100
    for username in (operator, crafted):
        assert [attempt(username, "pw-try") for _ in range(5)] == [200] * 5

    def warnings(username: str, count: int) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="core.admin_login"):
            assert [attempt(username, "correct-pw") for _ in range(count)] == [429] * count
        return [record.getMessage() for record in caplog.records if record.name == "core.admin_login"]

    # When 20 are refused for the operator, 3 for the other, then one after the interval
    first, other = warnings(operator, 20), warnings(crafted, 3)
    clock[0] += 60
    after = warnings(operator, 1)

    # Then each username's first is told at once, naming it and the setting, the operator's next
    # 19 with the one after the interval; no password in any
    assert len(first) == 1
    assert f"for username '{operator}'" in first[0]
    assert "ADMIN_LOGIN_FAILURES_PER_USERNAME_PER_HOUR (5)" in first[0] and "; 1 refused 429" in first[0]
    assert len(after) == 1 and f"'{operator}'" in after[0] and "; 20 refused 429" in after[0]
    # The attacker's text quoted, its line break escaped, cut at 64 characters
    assert len(other) == 1 and "\n" not in other[0]
    assert f"for username {crafted[:64]!r} (as the limit counts it: case folded; its first 64 characters)" in other[0]
    assert "x" * 60 not in other[0]
    assert not any("correct-pw" in line or "pw-try" in line for line in first + other + after)


def test_made_up_usernames_refused_are_not_remembered_for_good(
    operator: str, settings: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the warning's minute on a clock of the test's own, and three usernames made up by a
    # botnet, each spent then refused twice (told once, the second held for the next line)
    settings.ADMIN_LOGIN_FAILURES_PER_MINUTE = 0
    clock = [0.0]
    refusals = log_volume.CountedPerKey(clock=lambda: clock[0])
    monkeypatch.setattr(admin_login_module, "_username_refusals", refusals)
    made_up = [f"made-up-{uuid.uuid4().hex[:12]}" for _ in range(3)]
    for username in made_up:
        assert [attempt(username, "pw-try") for _ in range(7)] == [200] * 5 + [429] * 2
    assert len(refusals) == 3

    # When none of them is tried again for an hour and more, and one more username is refused
    clock[0] += 3600 + 60
    assert [attempt(made_up[0] + "-next", "pw-try") for _ in range(6)][-1] == 429

    # Then the process holds that one alone: the made-up ones, never seen again, are forgotten
    assert len(refusals) == 1


def test_a_locked_out_user_signs_in_once_the_window_is_over(operator: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert [attempt(operator, "wrong") for _ in range(6)][-1] == 429

    # Two hours on: the window the refusals were counted in and the one after are over
    later = time.time() + 2 * 3600
    monkeypatch.setattr("core.throttling.RateThrottle.timer", lambda self: later)

    assert attempt(operator, "correct-pw") == 302


def test_successful_logins_do_not_count(operator: str) -> None:
    statuses = [attempt(operator, "correct-pw") for _ in range(6)]
    statuses += [attempt(operator, random.choice(["wrong", "typo"])) for _ in range(6)]

    assert statuses == [302] * 6 + [200] * 5 + [429]


def test_a_password_change_voids_the_browsers_that_signed_in_before_it(operator: str) -> None:
    # Given the operator's browser, which signed in before, and the username's failed logins spent
    browser = signed_in_before(operator)
    assert [attempt(operator, "wrong") for _ in range(6)][-1] == 429
    assert attempt(operator, "typo", client=browser) == 200  # still exempt there

    # When the password is changed (reset, say, after the browser was stolen)
    user = User.objects.get(username=operator)
    user.set_password("fresh-pw-2")
    user.save()

    # Then that browser's cookie no longer exempts it, the new password neither
    assert attempt(operator, "typo", client=browser) == 429
    assert attempt(operator, "fresh-pw-2", client=browser) == 429
    # Nor does a cookie of before the password was in it (the username alone, signed)
    older = HttpClient()
    older.cookies["admin_signed_in_as"] = signing.dumps(operator, salt="core.admin_login.device")
    assert attempt(operator, "fresh-pw-2", client=older) == 429


def test_the_cookie_costs_a_query_only_for_its_own_username(
    operator: str, django_assert_num_queries: Any,
) -> None:
    browser = signed_in_before(operator)
    nobody = f"nobody-{uuid.uuid4().hex[:12]}"
    with CaptureQueriesContext(connection) as without_cookie:
        assert attempt(nobody, "wrong") == 200

    # A cookie of another username is not read further; its own reads the user once
    with django_assert_num_queries(len(without_cookie)):
        assert attempt(nobody, "wrong", client=browser) == 200
    with django_assert_num_queries(len(without_cookie) + 1):
        assert attempt(operator, "wrong", client=browser) == 200


def test_the_spellings_the_login_takes_for_one_username_share_its_limit(operator: str) -> None:
    # Given the username's failed logins spent
    assert [attempt(operator, "wrong") for _ in range(6)][-1] == 429

    # Then its full-width spelling, which the login form takes for it (NFKC), is refused too:
    # its own count would have given a botnet the guesses again, for each character spelt so
    wide = "".join(chr(ord(character) + 0xFEE0) for character in operator)
    assert attempt(wide, "wrong") == 429
    assert attempt(wide, "correct-pw") == 429
    assert attempt(wide.upper(), "correct-pw") == 429


def test_a_username_longer_than_the_form_takes_is_not_normalised(
    operator: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a spy on what the login's username normalisation is handed
    normalise = unicodedata.normalize
    handed: list[int] = []
    monkeypatch.setattr(unicodedata, "normalize", lambda form, text: handed.append(len(text)) or normalise(form, text))

    # When a POST names a username of 300,000 characters that NFKC makes 18 each (5.4 million)
    response = admin_login("\ufdfa" * 300_000, "wrong", forwarded_for=random_address())

    # Then it is refused as the form refuses it, unchecked, and nothing that long was normalised
    assert response.status_code == 200
    assert max(handed, default=0) <= 150


def test_a_browser_is_exempt_for_its_own_user_only_not_one_of_another_case(operator: str) -> None:
    # Given another user whose username differs from the operator's only in case (the limit
    # counts the two as one; the login checks each one's own password), and its browser
    other = operator.upper()
    User.objects.create_superuser(other, "other@example.com", "other-pw")
    browser = signed_in_browser(other, "other-pw")
    browser.post("/admin/logout/")

    # When a botnet spends the username's failed logins
    assert [attempt(operator, "wrong") for _ in range(6)][-1] == 429

    # Then that browser is exempt for its own user, not for guesses at the operator's password
    assert attempt(other, "typo", client=browser) == 200
    assert attempt(operator, "correct-pw", client=browser) == 429
