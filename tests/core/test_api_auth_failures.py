"""Failed API key checks are limited per client address (API_AUTH_FAILURE_RATE_PER_MINUTE): an
address that has spent its budget gets 429 without its keys being looked up, except keys that
already worked in the API process, so a client sharing that address keeps working."""
from __future__ import annotations

import random
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import Api, every_connection_wrapped, random_address, serving

LIMIT = 3


def bad_key() -> str:
    return f"jak_{secrets.token_urlsafe(32)}"


def call(api: Api, address: str, *, key: str | None = None, authorization: str | None = None) -> requests.Response:
    """GET /api/jobs/ as `api`'s client (or with `key`, or that Authorization header) from `address`,
    through the proxy the live server trusts (127.0.0.1)."""
    if authorization is None:
        authorization = f"Bearer {key or api.key}"
    return api.session.get(
        f"{api.base_url}/api/jobs/", headers={"Authorization": authorization, "X-Forwarded-For": address}, timeout=30
    )


@pytest.fixture
def key_lookups() -> Iterator[list[str]]:
    """The API key lookups the live server sends PostgreSQL."""
    lookups: list[str] = []

    def count(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        if 'FROM "core_apikey"' in sql:
            lookups.append(sql)
        return execute(sql, params, many, context)

    with every_connection_wrapped(count):
        yield lookups


@pytest.fixture
def limit(settings: Any) -> int:
    settings.API_AUTH_FAILURE_RATE_PER_MINUTE = LIMIT
    return LIMIT


@pytest.mark.usefixtures("limit")
def test_an_address_guessing_keys_gets_401s_then_429_without_a_lookup(
    make_api: Callable[..., Api], key_lookups: list[str]
) -> None:
    api, attacker = make_api(), random_address()

    failures = [call(api, attacker, key=bad_key()) for _ in range(LIMIT)]
    looked_up = len(key_lookups)
    refused = call(api, attacker, key=bad_key())

    assert [response.status_code for response in failures] == [401] * LIMIT
    assert {response.json()["error"]["code"] for response in failures} == {"authentication_failed"}
    assert looked_up == LIMIT  # each failure cost one lookup
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "too_many_failed_authentications"
    assert 1 <= int(refused.headers["Retry-After"]) <= 120  # the sliding window: up to two of them
    assert error["details"] == {"retry_after_seconds": int(refused.headers["Retry-After"])}
    assert len(key_lookups) == looked_up  # refused before the database was asked


@pytest.mark.usefixtures("limit")
def test_while_an_address_is_over_a_new_valid_key_is_refused_but_one_that_already_worked_is_not(
    make_api: Callable[..., Api], key_lookups: list[str], settings: Any
) -> None:
    # Given an office's client whose key worked in this process, and a client whose key has not yet
    office, colleague, newcomer = random_address(), make_api(), make_api()
    assert call(colleague, office).status_code == 200

    # when someone at the same address spends its budget guessing keys
    assert [call(colleague, office, key=bad_key()).status_code for _ in range(LIMIT)] == [401] * LIMIT

    # then the new key is refused unchecked, and the known one still works, even once it is due
    # to be looked up again (a revoked key would be seen)
    looked_up = len(key_lookups)
    assert call(newcomer, office).status_code == 429
    assert len(key_lookups) == looked_up
    assert call(colleague, office).status_code == 200
    settings.API_KEY_CACHE_SECONDS = 0
    assert call(colleague, office).status_code == 200
    assert len(key_lookups) == looked_up + 1


@pytest.mark.usefixtures("limit")
def test_other_addresses_are_not_affected(make_api: Callable[..., Api]) -> None:
    api, attacker, neighbour = make_api(), random_address(), random_address()
    for _ in range(LIMIT + 1):
        call(api, attacker, key=bad_key())

    assert call(api, neighbour, key=bad_key()).status_code == 401
    assert call(make_api(), neighbour).status_code == 200


@pytest.mark.usefixtures("limit")
def test_a_client_naming_other_addresses_in_x_forwarded_for_spends_its_own(make_api: Callable[..., Api]) -> None:
    api, attacker = make_api(), random_address()

    # The proxy appends the address it was reached from; what the client put before it is not believed.
    statuses = [call(api, f"{random_address()}, {attacker}", key=bad_key()).status_code for _ in range(LIMIT + 1)]

    assert statuses == [401] * LIMIT + [429]


@pytest.mark.usefixtures("limit")
def test_an_address_a_proxy_gives_with_its_port_spends_its_own_whatever_the_port(make_api: Callable[..., Api]) -> None:
    # Azure's Application Gateway, and IIS's ARR, append `address:port` (IPv6 in brackets): the
    # client's port, a new one for each of its connections
    api, attacker, neighbour = make_api(), random_address(), random_address()
    attacker_v6 = f"2001:db8:{random.randrange(65536):x}::1"

    statuses = [call(api, f"{attacker}:{40000 + n}", key=bad_key()).status_code for n in range(LIMIT + 1)]
    statuses += [call(api, f"[{attacker_v6}]:{40000 + n}", key=bad_key()).status_code for n in range(LIMIT + 1)]

    # Then the port is not part of the address: its guesses spend one budget
    assert statuses == ([401] * LIMIT + [429]) * 2
    assert call(make_api(), f"{neighbour}:40000").status_code == 200


@pytest.mark.usefixtures("limit")
def test_successful_authentications_spend_nothing(make_api: Callable[..., Api]) -> None:
    office = random_address()

    # New keys (each looked up, its place taken then given back), then failures
    statuses = [call(make_api(), office).status_code for _ in range(LIMIT + 1)]
    statuses += [call(make_api(), office, key=bad_key()).status_code for _ in range(LIMIT + 1)]

    assert statuses == [200] * (LIMIT + 1) + [401] * LIMIT + [429]


@pytest.mark.usefixtures("limit")
def test_malformed_authorization_counts_and_none_at_all_does_not(make_api: Callable[..., Api]) -> None:
    api, address = make_api(), random_address()

    # No Authorization header: 401, and no key tried, so nothing spent
    anonymous = [api.session.get(f"{api.base_url}/api/jobs/", headers={"X-Forwarded-For": address}, timeout=30)
                 for _ in range(LIMIT + 1)]
    assert {(response.status_code, response.json()["error"]["code"]) for response in anonymous} == {
        (401, "not_authenticated")
    }

    statuses = [call(api, address, authorization=header).status_code for header in ("Basic dXNlcjpwYXNz", "jak_abc")]
    statuses += [call(api, address, key=bad_key()).status_code, call(api, address, authorization="Token x").status_code]

    assert statuses == [401] * LIMIT + [429]


def test_zero_turns_the_limit_off(make_api: Callable[..., Api], settings: Any) -> None:
    settings.API_AUTH_FAILURE_RATE_PER_MINUTE = 0
    api, address = make_api(), random_address()

    statuses = [call(api, address, key=bad_key()).status_code for _ in range(10)]

    assert statuses == [401] * 10
    assert call(make_api(), address).status_code == 200


@pytest.mark.usefixtures("limit", "limiter_redis_unreachable")
def test_with_the_limiters_redis_unreachable_keys_are_checked_as_without_a_limit(
    make_api: Callable[..., Api],
) -> None:
    # Given an API process whose limiter cannot reach its Redis, as the other limits do
    api, address = make_api(), random_address()

    statuses = [call(api, address, key=bad_key()).status_code for _ in range(LIMIT + 1)]

    # then every key is looked up (never a 500): a valid one works
    assert statuses == [401] * (LIMIT + 1)
    assert call(make_api(), address).status_code == 200


def test_the_budget_is_shared_by_the_api_processes(
    make_api: Callable[..., Api], settings: Any, tmp_path: Path
) -> None:
    # Given an address that spent its budget in this process (the live server)
    settings.API_AUTH_FAILURE_RATE_PER_MINUTE = LIMIT
    api, attacker = make_api(), random_address()
    assert [call(api, attacker, key=bad_key()).status_code for _ in range(LIMIT)] == [401] * LIMIT

    # when it goes on guessing through another API process (gunicorn, as production runs it)
    with serving(api, tmp_path / "gunicorn.log", API_AUTH_FAILURE_RATE_PER_MINUTE=str(LIMIT)) as (other, _):
        guess = call(other, attacker, key=bad_key())
        newcomer = call(Api(other.base_url, make_api().key), attacker)
        elsewhere = call(other, random_address())

    # then that one refuses it too, and its new keys, and no one else
    assert guess.status_code == newcomer.status_code == 429
    assert elsewhere.status_code == 200


# The proxy named as its IPv4 address, or as gunicorn itself needs it named to trust its
# X-Forwarded-* headers on [::] (gunicorn compares ::ffff:127.0.0.1 with the list as it is).
@pytest.mark.parametrize("trusted", ["127.0.0.1", "::ffff:127.0.0.1", "::ffff:127.0.0.0/104"])
def test_behind_a_proxy_reaching_a_server_on_ipv6_too_each_address_spends_its_own(
    make_api: Callable[..., Api], tmp_path: Path, trusted: str
) -> None:
    # Given gunicorn listening on IPv6 as well as IPv4 ([::]), which sees the proxy (127.0.0.1,
    # trusted) as ::ffff:127.0.0.1
    api, attacker, neighbour = make_api(), random_address(), random_address()
    with serving(api, tmp_path / "gunicorn.log", HOST="[::]", API_AUTH_FAILURE_RATE_PER_MINUTE=str(LIMIT),
                 FORWARDED_ALLOW_IPS=trusted) as (served, _):
        # when one address behind it spends its budget
        guesses = [call(served, attacker, key=bad_key()).status_code for _ in range(LIMIT + 1)]
        # then it is that address's alone: another's new key still works
        newcomer = call(Api(served.base_url, make_api().key), neighbour)

    assert guesses == [401] * LIMIT + [429]
    assert newcomer.status_code == 200
