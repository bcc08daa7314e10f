"""A recovery (`POST /api/webhook-endpoints/<id>/recover/`) sends at most
RECOVER_MAX_DELIVERIES a call, the newest failures first, and the next call the next ones: all of
an endpoint's failures read at once, with their events, one request took 31 s and 1.6 GiB of its
API process at 200,000 of them (webhooks/endpoints.py)."""
from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.conftest import Api
from webhooks import endpoints
from webhooks.models import Delivery, Event


def test_a_recovery_sends_at_most_its_bound_and_the_next_one_the_rest(
    make_api: Callable[..., Api], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a disabled endpoint (so nothing is sent meanwhile) whose deliveries of five events
    # failed for good, an hour apart, and a bound of two deliveries a recovery
    monkeypatch.setattr(endpoints, "RECOVER_MAX_DELIVERIES", 2)
    api = make_api()
    response = api.post("/api/webhook-endpoints/", json={"url": "http://127.0.0.1:9/hook", "enabled": False})
    assert response.status_code == 201, response.text
    endpoint = response.json()
    now = timezone.now()
    events = []
    for hours in range(5, 0, -1):
        event = Event.objects.create(owner=api.client, subject_id=api.client.pk, event_type="job.succeeded", body=b"{}")
        Delivery.objects.create(
            event=event, owner=api.client, subject_id=event.subject_id, endpoint_id=endpoint["id"],
            url=endpoint["url"], state=Delivery.State.FAILED, attempt_count=3,
            created_at=now - timedelta(hours=hours), finished_at=now - timedelta(hours=hours),
        )
        events.append(event.message_id)

    # When its client recovers what failed since the day before, again and again
    def recover() -> tuple[int, list[str]]:
        answer = api.post(f"/api/webhook-endpoints/{endpoint['id']}/recover/",
                          json={"since": (now - timedelta(days=1)).isoformat()})
        assert answer.status_code == 202, answer.text
        # What went again: held with the endpoint, as its others are while it is disabled
        again = api.get(f"/api/deliveries/?endpoint={endpoint['id']}&state=endpoint_disabled").json()["results"]
        return answer.json()["recovered"], sorted(d["webhook_id"] for d in again)

    calls = [recover() for _ in range(4)]

    # Then the first sends two, the newest failures, and each next one two more at most, until
    # every event has gone again, once, and the answer says so: a client calling again while it
    # answers the bound stops (the deliveries held by the earlier calls, which stay held, were
    # counted again by each next one: it answered 2 for ever)
    assert calls[0] == (2, sorted(events[-2:]))
    assert [len(again) for _, again in calls] == [2, 4, 5, 5]
    assert [count for count, _ in calls] == [2, 2, 1, 0]
    assert calls[-1][1] == sorted(events)
