"""A stream's reads take a turn of their process in their client's place (jobs/streams.py,
core/concurrency.py): a client replaying its history on streams takes turns with other clients'
requests instead of running beside them."""
from __future__ import annotations

import threading
from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory
from django.utils import timezone

from core import concurrency
from core.concurrency import ActiveRequestsMiddleware
from core.services import client_create
from jobs import streams
from jobs.models import Job, JobEvent
from jobs.wakeups import Waiter

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_streams_catch_up_waits_for_the_turn_another_clients_request_holds(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given one turn per process, held by client B's request until the test lets it end
    settings.WEB_ACTIVE_REQUESTS = 1
    settings.WEB_TURN_CONNECTIONS = False
    monkeypatch.setattr(concurrency, "_turns", None)
    running, may_end = threading.Event(), threading.Event()

    def view(request: HttpRequest) -> HttpResponse:
        running.set()
        may_end.wait(10)
        return HttpResponse()

    request = RequestFactory().get("/api/jobs/", HTTP_AUTHORIZATION="Bearer key-b")
    holding = threading.Thread(target=ActiveRequestsMiddleware(view), args=(request,))
    holding.start()
    assert running.wait(10)

    # and client A's stream resuming from before its three events (its job claimed for dispatch,
    # as a submission leaves it: the suite's beat sweeps a committed job left unclaimed, and its
    # worker's events would join them)
    owner = client_create(name="stream-turns")
    job = Job.objects.create(owner=owner, job_name="api.tasks.hello_world", dispatched_at=timezone.now())
    for event_type in ("job.started", "job.progress", "job.succeeded"):
        JobEvent.objects.create(job=job, owner=owner, job_name=job.job_name, event_type=event_type, body="{}")
    body = streams.owner_event_stream(waiter=Waiter(client_id=owner.pk, owner_id=owner.pk), owner_id=owner.pk,
                                      after=0, job_name="", client=None, turn_key="Bearer key-a",
                                      authorized=lambda: True)
    assert next(body).startswith(b"retry:")
    sent: list[bytes] = []
    reading = threading.Thread(target=lambda: sent.append(next(body)))
    reading.start()

    # When it goes on to read them, it waits for the turn (beside it, perhaps, a stream an
    # earlier test left to the shared live server, between two of its reads: at least one waits)
    reading.join(0.5)
    assert reading.is_alive() and concurrency._turns.waiting() >= 1 and sent == []

    # Then it sends them, in one chunk, once B's request has ended
    may_end.set()
    holding.join(10)
    reading.join(10)
    assert [line for line in sent[0].split(b"\n") if line.startswith(b"event:")] == [
        b"event: job.started", b"event: job.progress", b"event: job.succeeded"]
    body.close()
