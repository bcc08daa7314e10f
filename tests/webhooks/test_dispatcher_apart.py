"""The webhook dispatcher (webhooks.deliveries_dispatch_due) starts again each stalled
rescheduling apart: an endpoint whose save raises (a database error on its row) is logged and
left, and the others' reschedulings still start, run after run, where it rolled them back with it
(core/rows_apart.py)."""
from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.utils import timezone

from core.rows_apart import RowsFailed
from core.services import client_create
from tests.conftest import updates_refused
from webhooks import dispatch, endpoints, tasks
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
