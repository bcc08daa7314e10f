"""The webhook dispatcher (webhooks.deliveries_dispatch_due) starts again each stalled
rescheduling apart: an endpoint whose save raises (a database error on its row) is logged and
left, and the others' reschedulings still start, run after run, where it rolled them back with it,
however many raise (more than a run's page of them: each run reads from a random key,
core/rows_apart.py)."""
from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.utils import timezone

from core.rows_apart import RowsApart, RowsFailed
from core.services import client_create
from tests.conftest import updates_refused
from webhooks import dispatch, endpoints, reschedule, tasks
from webhooks.models import Endpoint


@pytest.mark.django_db
def test_an_endpoint_whose_save_raises_leaves_the_others_rescheduled(caplog: pytest.LogCaptureFixture) -> None:
    # Given four endpoints whose rescheduling's message was lost, one of which PostgreSQL refuses
    # to update
    owner = client_create(name="dispatcher-apart")
    created = [endpoints.endpoint_create(owner_id=owner.pk, url=f"http://127.0.0.1:9/hooks/{n}") for n in range(4)]
    stalled_since = timezone.now() - timedelta(seconds=dispatch.REDISPATCH_AFTER_SECONDS + 60)
    Endpoint.objects.filter(pk__in=[e.pk for e in created]).update(rescheduling_since=stalled_since)
    refused, others = created[0], created[1:]
    updates_refused(refused)

    # When the dispatcher runs
    with pytest.raises(RowsFailed):
        tasks.deliveries_dispatch_due()

    # Then every other endpoint's rescheduling started again, and the refused one is named in the log
    for endpoint in others:
        endpoint.refresh_from_db()
        assert endpoint.rescheduling_since > stalled_since, endpoint.pk
    refused.refresh_from_db()
    assert refused.rescheduling_since == stalled_since
    [line] = [r for r in caplog.records if r.levelno == logging.ERROR and str(refused.pk) in r.getMessage()]
    assert "webhooks.deliveries_dispatch_due" in line.getMessage()


@pytest.mark.django_db
def test_more_endpoints_whose_save_raises_than_a_page_leave_the_others_rescheduled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given six endpoints whose rescheduling's message was lost: the three first in key order,
    # more than the dispatcher's page of two, PostgreSQL refuses to update
    owner = client_create(name="dispatcher-pages")
    created = sorted((endpoints.endpoint_create(owner_id=owner.pk, url=f"http://127.0.0.1:9/hooks/{n}")
                      for n in range(6)), key=lambda endpoint: endpoint.pk)
    stalled_since = timezone.now() - timedelta(seconds=dispatch.REDISPATCH_AFTER_SECONDS + 60)
    Endpoint.objects.filter(pk__in=[e.pk for e in created]).update(rescheduling_since=stalled_since)
    refused, others = created[:3], created[3:]
    for n, endpoint in enumerate(refused):
        updates_refused(endpoint, name=f"test_row_refused_{n}")

    # When the dispatcher's look for stalled reschedulings runs, two endpoints a run, until no
    # other is left stalled and each refused one has been tried
    apart = RowsApart(task="webhooks.deliveries_dispatch_due", what="endpoint")

    def named(endpoint: Endpoint) -> bool:
        return any(r.levelno == logging.ERROR and str(endpoint.pk) in r.getMessage() for r in caplog.records)

    for _ in range(RUNS_AT_MOST):
        reschedule.endpoints_reschedule_stalled(apart=apart, page_rows=2)
        stalled = Endpoint.objects.filter(pk__in=[e.pk for e in others], rescheduling_since=stalled_since)
        if not stalled.exists() and all(map(named, refused)):
            break

    # Then every other endpoint's rescheduling started again within a few runs (each run starts
    # from a random key: one from the lowest key at every run met the same refused two, run
    # after run), and each refused one is left and named in the log
    for endpoint in others:
        endpoint.refresh_from_db()
        assert endpoint.rescheduling_since > stalled_since, endpoint.pk
    for endpoint in refused:
        endpoint.refresh_from_db()
        assert endpoint.rescheduling_since == stalled_since
        assert named(endpoint), endpoint.pk


# Runs after which an endpoint a run's page has not reached is taken for one no run reaches: a
# run from a random key reaches a given one of the six at least once in six, so that a hundred
# runs all miss it once in a hundred million.
RUNS_AT_MOST = 100
