"""The submit rate limit holds exactly when one client's requests race each other."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.conftest import Api, SilentServer, silent_server

BODY = {"job_name": "api.tasks.hello_world"}


def test_concurrent_submissions_admit_exactly_the_rate(make_api: Callable[..., Api], settings: Any) -> None:
    # Given a rate of 5 a minute
    settings.API_SUBMIT_RATE_PER_MINUTE = 5
    api = make_api()  # a new client: no submissions in its window yet

    # when 12 submissions arrive at once
    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(lambda _: Api(api.base_url, api.key).post("/api/jobs/", json=BODY).status_code,
                                 range(12)))

    # then exactly 5 are accepted (no lost update between racing requests), the rest get 429
    assert sorted(statuses) == [202] * 5 + [429] * 7


@pytest.mark.usefixtures("limiter_redis_unreachable")
def test_with_the_limiters_redis_unreachable_from_the_start_submissions_are_admitted(
    make_api: Callable[..., Api], settings: Any
) -> None:
    # Given an API process whose limiter has never reached its Redis (down as the process starts)
    settings.API_SUBMIT_RATE_PER_MINUTE = 5
    api = make_api()

    # when a client submits, even past its rate
    statuses = [api.post("/api/jobs/", json=BODY).status_code for _ in range(7)]

    # then every submission is accepted: the limiter admits on its own counts, never a 500
    assert statuses == [202] * 7


@pytest.fixture
def limiter_redis_hung(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[SilentServer]:
    """This process's rate limiter made again, against a Redis that never answers."""
    monkeypatch.setattr("core.throttling._limiter", None)
    monkeypatch.setattr("core.throttling._client", None)
    with silent_server() as hung:
        settings.CACHE_URL = f"redis://{hung.address}/0"
        yield hung


def test_with_the_limiters_redis_hung_only_one_submission_waits_on_it(
    make_api: Callable[..., Api], settings: Any, limiter_redis_hung: SilentServer
) -> None:
    # Given an API process whose limiter's Redis takes connections but never answers, and a
    # rate so low that each submission would be Redis's to decide
    settings.API_SUBMIT_RATE_PER_MINUTE = 5
    api = make_api()

    # When a client submits 6 jobs, one after another
    statuses = [api.post("/api/jobs/", json=BODY).status_code for _ in range(6)]

    # Then every one is accepted, and only the first waited on the hung Redis (each wait is the
    # client's timeout, a second); the others were decided by the process alone
    assert statuses == [202] * 6
    assert len(limiter_redis_hung.connections) == 1
