"""The endpoint health rule (webhooks/health.py): a run of failures must be both long enough
and old enough to disable an endpoint, and any success ends it."""
from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from core.services import client_create
from webhooks import attempts, recording
from webhooks.health import endpoints_record_outcomes
from webhooks.models import Endpoint

pytestmark = pytest.mark.django_db


@pytest.fixture
def endpoint(settings: Any) -> Endpoint:
    settings.WEBHOOK_ENDPOINT_DISABLE_AFTER_FAILURES = 3
    settings.WEBHOOK_ENDPOINT_DISABLE_AFTER_SECONDS = 3600
    owner = client_create(name=f"health-{uuid.uuid4().hex[:8]}")
    return Endpoint.objects.create(owner=owner, url="https://hooks.example.com/", event_types=["job.succeeded"])


def fail(endpoint: Endpoint, *, times: int, at: Any) -> Endpoint:
    endpoints_record_outcomes([(endpoint.pk, False, "HTTP 500")] * times, now=at)
    endpoint.refresh_from_db()
    return endpoint


def test_many_failures_in_a_short_time_do_not_disable(endpoint: Endpoint) -> None:
    now = timezone.now()
    failed = fail(endpoint, times=10, at=now)
    assert failed.enabled and failed.consecutive_failures == 10 and failed.failing_since == now
    assert failed.last_error == "HTTP 500" and failed.last_failure_at == now


def test_few_failures_over_a_long_time_do_not_disable(endpoint: Endpoint) -> None:
    start = timezone.now()
    fail(endpoint, times=1, at=start)
    failed = fail(endpoint, times=1, at=start + timedelta(hours=2))
    assert failed.enabled and failed.consecutive_failures == 2 and failed.failing_since == start


def test_enough_failures_over_enough_time_disable(endpoint: Endpoint) -> None:
    start = timezone.now()
    fail(endpoint, times=2, at=start)
    failed = fail(endpoint, times=1, at=start + timedelta(hours=1))
    assert not failed.enabled and failed.disabled_reason == Endpoint.DisabledReason.FAILING
    assert failed.disabled_at is not None


def test_a_success_ends_the_run(endpoint: Endpoint) -> None:
    start = timezone.now()
    fail(endpoint, times=2, at=start)
    endpoints_record_outcomes([(endpoint.pk, False, "HTTP 500"), (endpoint.pk, True, "")], now=start)
    failed = fail(endpoint, times=1, at=start + timedelta(hours=1))
    assert failed.enabled and failed.consecutive_failures == 1
    assert failed.failing_since == start + timedelta(hours=1) and failed.last_success_at == start


def test_callback_deliveries_cost_no_query(django_assert_num_queries: Any) -> None:
    with django_assert_num_queries(0):
        endpoints_record_outcomes([(None, False, "refused"), (None, True, "")], now=timezone.now())


@pytest.mark.parametrize("error", [f"{attempts.SURPRISE}: RuntimeError", f"{recording.UNRECORDED}: DataError"])
def test_internal_errors_count_neither_way(endpoint: Endpoint, error: str) -> None:
    # Given a run of two failures of its receiver
    start = timezone.now()
    fail(endpoint, times=2, at=start)

    # When an hour later three attempts fail by the service's own fault (a bug)
    endpoints_record_outcomes([(endpoint.pk, False, error)] * 3, now=start + timedelta(hours=1))

    # Then they neither add to the run (five over an hour disable it) nor are its last failure
    endpoint.refresh_from_db()
    assert endpoint.enabled and endpoint.consecutive_failures == 2 and endpoint.failing_since == start
    assert endpoint.last_failure_at == start and endpoint.last_error == "HTTP 500"
