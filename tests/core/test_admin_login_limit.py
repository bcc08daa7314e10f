"""The admin's login limit counts failed attempts per client address: behind the proxy, the
client's own (X-Forwarded-For, believed only from a trusted proxy), so an attacker's wrong
passwords cannot lock the operators out of the admin and the console; nor can an outage of the
database, whose refused sign-ins never reached a password check."""
from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection

from tests.conftest import PROXY, admin_login, random_address, signed_in_browser
from tests.proxy import CountingProxy

pytestmark = pytest.mark.django_db


def attempt(password: str, *, peer: str = PROXY, forwarded_for: str | None = None) -> int:
    """The status of one login as "admin" from `peer`, with X-Forwarded-For when given."""
    return admin_login("admin", password, peer=peer, forwarded_for=forwarded_for).status_code


@contextlib.contextmanager
def database_out_of_reach() -> Iterator[None]:
    """PostgreSQL gone for this process's requests, as the service meets it: its connection is
    made again through a proxy that closes every connection at once (tests/proxy.py; the
    machine's shared server is never stopped), and made to the server again afterwards."""
    database = connection.settings_dict
    host, port = database["HOST"], database["PORT"]
    proxy = CountingProxy((host or "127.0.0.1", int(port or 5432)))
    proxy.cut()
    connection.close()
    database["HOST"], database["PORT"] = proxy.address.split(":")
    try:
        yield
    finally:
        connection.close()
        database["HOST"], database["PORT"] = host, port
        proxy.close()


@pytest.fixture
def operator(settings: Any) -> None:
    settings.ADMIN_LOGIN_RATE_PER_MINUTE = 10
    User.objects.create_superuser("admin", "admin@example.com", "correct-pw")


@pytest.mark.usefixtures("operator")
def test_an_attackers_wrong_passwords_through_the_proxy_do_not_lock_the_operator_out() -> None:
    attacker, operator = random_address(), random_address()

    failures = [attempt("wrong", forwarded_for=attacker) for _ in range(10)]

    assert failures == [200] * 10  # a wrong password shows the form again
    assert attempt("wrong", forwarded_for=attacker) == 429  # the attacker's own address is limited
    assert attempt("correct-pw", forwarded_for=operator) == 302  # the operator is let in


@pytest.mark.usefixtures("operator")
def test_an_attacker_behind_the_proxy_is_limited_however_it_rotates_x_forwarded_for() -> None:
    attacker, operator = random_address(), random_address()

    # The attacker names a new address at each attempt, the operator's too; the proxy appends
    # the one it was reached from (nginx's $proxy_add_x_forwarded_for).
    statuses = [attempt("wrong", forwarded_for=f"{random_address()}, {attacker}") for _ in range(10)]
    statuses += [attempt("wrong", forwarded_for=f"{operator}, {attacker}")]

    assert statuses == [200] * 10 + [429]
    assert attempt("correct-pw", forwarded_for=operator) == 302


@pytest.mark.usefixtures("operator")
def test_x_forwarded_for_from_a_peer_that_is_not_a_trusted_proxy_is_ignored() -> None:
    attacker = random_address()

    # Straight to the API, not through the proxy: what it says of itself counts for nothing.
    statuses = [attempt("wrong", peer=attacker, forwarded_for=random_address()) for _ in range(11)]

    assert statuses == [200] * 10 + [429]
    # Its failures were its own address's, not the proxy's: the proxy's other clients get in,
    # and the attacker's address is found spent when the proxy brings it.
    assert attempt("correct-pw", forwarded_for=random_address()) == 302
    assert attempt("correct-pw", forwarded_for=attacker) == 429


@pytest.mark.usefixtures("operator")
def test_an_attacker_cannot_escape_the_limit_with_the_addresses_of_its_ipv6_64() -> None:
    network = f"2001:db8:{random.randrange(1 << 16):x}:{random.randrange(1 << 16):x}"

    statuses = [attempt("wrong", forwarded_for=f"{network}::{n + 1:x}") for n in range(11)]

    assert statuses == [200] * 10 + [429]


@pytest.mark.usefixtures("operator")
def test_successful_logins_do_not_count(settings: Any) -> None:
    settings.ADMIN_LOGIN_RATE_PER_MINUTE = 2
    office = random_address()

    statuses = [attempt("correct-pw", forwarded_for=office) for _ in range(3)]
    statuses += [attempt("wrong", forwarded_for=office) for _ in range(3)]

    assert statuses == [302] * 3 + [200, 200, 429]


def test_a_trusted_proxy_may_be_named_by_its_network(settings: Any) -> None:
    # A proxy that Docker's port forwarding or the Compose network hands over from an address
    # that varies (docs/deployment.md).
    settings.FORWARDED_ALLOW_IPS = ["172.16.0.0/12"]
    settings.ADMIN_LOGIN_RATE_PER_MINUTE = 10
    User.objects.create_superuser("admin", "admin@example.com", "correct-pw")
    attacker, operator = random_address(), random_address()

    statuses = [attempt("wrong", peer="172.18.0.1", forwarded_for=attacker) for _ in range(11)]

    assert statuses == [200] * 10 + [429]
    assert attempt("correct-pw", peer="172.18.0.1", forwarded_for=operator) == 302


@pytest.mark.django_db(transaction=True)  # the superuser committed: read on a connection made anew
def test_sign_ins_refused_while_the_database_is_down_do_not_count(settings: Any) -> None:
    # Given an operator, and a limit of three failed sign-ins a minute
    settings.ADMIN_LOGIN_RATE_PER_MINUTE = 3
    User.objects.create_superuser("admin", "admin@example.com", "correct-pw")
    office = random_address()

    # When the operator retries through an outage of the database, typos and all
    with database_out_of_reach():
        during = [attempt(password, forwarded_for=office) for password in ["correct-pw", "wrong"] * 3]

    # Then each is told the database is down, none was a failed password, and once it is back
    # the operator signs in
    assert during == [503] * 6
    assert attempt("correct-pw", forwarded_for=office) == 302


@pytest.mark.django_db(transaction=True)  # the superuser committed: read on a connection made anew
def test_sign_ins_refused_while_the_database_is_down_do_not_count_in_a_browser_that_signed_in_before(
    settings: Any,
) -> None:
    # Given an operator's browser that signed in before (its cookie read against the user's row,
    # before the form's check), and a limit of three failed sign-ins a minute
    settings.ADMIN_LOGIN_RATE_PER_MINUTE = 3
    User.objects.create_superuser("admin", "admin@example.com", "correct-pw")
    browser = signed_in_browser("admin", "correct-pw")
    browser.post("/admin/logout/")
    office = random_address()

    # When the operator retries from it through an outage of the database
    with database_out_of_reach():
        during = [admin_login("admin", "correct-pw", browser=browser, forwarded_for=office).status_code
                  for _ in range(6)]

    # Then each is told the database is down, and none spent the office's failed sign-ins
    assert during == [503] * 6
    assert [attempt("wrong", forwarded_for=office) for _ in range(4)] == [200] * 3 + [429]
