"""The console's receivers with failing deliveries: every one counted exactly, however many
failures one of them has, the most failing listed, and a refresh's queries bounded."""
from __future__ import annotations

import html
import re
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client as BrowserClient
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from console.counted import COUNTED_FOR_SECONDS
from console.receivers import TOP
from core.services import client_create
from tests.console.seed import failing_deliveries
from tests.console.test_console_page import (
    _figures,
    _page_queries,
    row_of,
    section,
    text,
)
from webhooks.models import Delivery, DeliveryAttempt, Endpoint
from webhooks.outbox import event_record

pytestmark = pytest.mark.django_db

# More failures of each kind than the console once read (the newest 500 of each).
NOISY = 600


def failing_receivers_metric() -> float:
    response = BrowserClient().get("/metrics", HTTP_AUTHORIZATION="Bearer test-metrics-token")
    assert response.status_code == 200
    samples = [s for family in text_string_to_metric_families(response.content.decode()) for s in family.samples]
    return next(s.value for s in samples if s.name == "jobapi_webhook_failing_receivers")


def test_a_noisy_receiver_hides_no_other_and_every_count_is_exact(staff: BrowserClient) -> None:
    # Given a quiet callback host and a quiet endpoint that failed a while ago, and a noisy host
    # failing since, more often than the console once read
    client = client_create(name="acme")
    endpoint = Endpoint.objects.create(owner=client, url="https://quiet-endpoint.example/in")
    failing_deliveries(client, "https://quiet.example/hook", failed=2, retrying=1, age=timedelta(minutes=20))
    failing_deliveries(client, endpoint.url, endpoint=endpoint, failed=1, retrying=0, age=timedelta(minutes=30),
                       status_code=410)
    failing_deliveries(client, "https://NOISY.example:8443/jobs?id=1", failed=NOISY, retrying=NOISY,
                       age=timedelta(minutes=1))
    # (those failed given their authority, as the service does since migration 0011, the rest
    # made before it)
    Delivery.objects.filter(state=Delivery.State.FAILED, url__contains="NOISY").update(authority="noisy.example:8443")

    # When an operator looks at the console, and Prometheus at /metrics
    receivers = section(_figures(staff), "receivers")

    # Then each receiver is there with its exact counts (retrying, given up), the noisiest first
    assert row_of(receivers, "quiet.example")[1:4] == ["1", "2", "HTTP 503"]
    assert row_of(receivers, f"quiet-endpoint.example (endpoint {str(endpoint.pk)[:8]})")[1:4] == ["0", "1", "HTTP 410"]
    assert row_of(receivers, "noisy.example")[1:4] == [str(NOISY), str(NOISY), "HTTP 503"]
    assert text(receivers).index("noisy.example") < text(receivers).index("quiet.example")
    assert "more receiver" not in receivers
    assert failing_receivers_metric() == 3


def test_the_list_is_the_most_failing_and_a_refresh_reads_as_many_queries_for_any_number(
    staff: BrowserClient,
) -> None:
    # Given two failing receivers, and the queries a refresh makes then
    client = client_create(name="acme")
    failing_deliveries(client, "https://first.example/hook", failed=3, retrying=2, age=timedelta(minutes=5))
    failing_deliveries(client, "https://second.example/hook", failed=4, retrying=0, age=timedelta(minutes=5))
    with CaptureQueriesContext(connection) as few:
        _figures(staff)

    # When TOP + 10 more receivers, endpoints, fail once each
    for n in range(TOP + 10):
        endpoint = Endpoint.objects.create(owner=client, url=f"https://once-{n}.example/hook")
        failing_deliveries(client, endpoint.url, endpoint=endpoint, failed=1, retrying=0, age=timedelta(seconds=n))
    with CaptureQueriesContext(connection) as many:
        receivers = section(_figures(staff), "receivers")

    # Then the page lists TOP of them, the two failing most first, says how many more there
    # are, and the refresh made no more queries than before; the metric counts them all
    assert receivers.count("<tr>") == 1 + TOP
    assert text(receivers).index("first.example") < text(receivers).index("second.example") < text(
        receivers).index("once-")
    assert "And 12 more receivers, with fewer failures" in text(receivers)
    assert _page_queries(many) == _page_queries(few)
    assert failing_receivers_metric() == TOP + 12


def test_a_callbacks_deliveries_carry_its_host_and_port_which_the_console_counts_them_by(
    staff: BrowserClient,
) -> None:
    # Given an event for a job with a callback URL, whose delivery is given up on
    client = client_create(name="acme")
    event_record(owner_id=client.pk, subject_id=uuid.uuid4(), event_type="job.failed", data={},
                 callback_url="https://Hooks.Example:8443/in?token=t#x", publish=False)
    delivery = Delivery.objects.get(owner_id=client.pk)
    now = timezone.now()
    Delivery.objects.filter(pk=delivery.pk).update(state=Delivery.State.FAILED, attempt_count=1, finished_at=now)
    DeliveryAttempt.objects.create(delivery=delivery, number=1, started_at=now, finished_at=now, error="refused")

    # When an operator looks at the console
    receivers = section(_figures(staff), "receivers")

    # Then the delivery was made with its host and port, and is counted under its host alone
    assert Delivery.objects.get(pk=delivery.pk).authority == "hooks.example:8443"
    assert row_of(receivers, "hooks.example")[1:4] == ["0", "1", "refused"]
    assert "token" not in text(receivers)


def test_a_first_attempt_in_flight_is_no_failure_and_a_retry_in_flight_still_is(staff: BrowserClient) -> None:
    # Given two receivers each with one delivery being sent right now: one its first attempt,
    # the other its second, after a failed first
    client = client_create(name="acme")
    failing_deliveries(client, "https://first-try.example/in", failed=0, retrying=1, age=timedelta(minutes=1))
    failing_deliveries(client, "https://second-try.example/in", failed=0, retrying=1, age=timedelta(minutes=1))
    now = timezone.now()
    claim = {"claim_token": uuid.uuid4(), "claimed_until": now + timedelta(minutes=1)}
    first = Delivery.objects.get(url__contains="first-try")
    Delivery.objects.filter(pk=first.pk).update(**claim)
    DeliveryAttempt.objects.filter(delivery=first).update(finished_at=None, status_code=None)
    second = Delivery.objects.get(url__contains="second-try")
    Delivery.objects.filter(pk=second.pk).update(attempt_count=2, **claim)
    DeliveryAttempt.objects.create(delivery=second, number=2, started_at=now)

    # When an operator looks at the console
    receivers = section(_figures(staff), "receivers")

    # Then only the retry is a failing receiver's, with its failed attempt's error
    assert "first-try.example" not in receivers
    assert row_of(receivers, "second-try.example")[1:4] == ["1", "0", "HTTP 503"]
    assert failing_receivers_metric() == 1


def test_an_endpoint_is_named_by_the_host_its_last_attempt_went_to(staff: BrowserClient) -> None:
    # Given an endpoint moved to another host, whose delivery recorded before the move failed
    # its last attempt at the new one
    client = client_create(name="acme")
    endpoint = Endpoint.objects.create(owner=client, url="https://new-host.example/in")
    failing_deliveries(client, "https://old-host.example/in", endpoint=endpoint, failed=1, retrying=0,
                       age=timedelta(minutes=5))
    DeliveryAttempt.objects.filter(endpoint_id=endpoint.pk).update(url=endpoint.url)

    # When an operator looks at the console
    receivers = section(_figures(staff), "receivers")

    # Then the row names the host the error came from
    assert row_of(receivers, f"new-host.example (endpoint {str(endpoint.pk)[:8]})")[1:4] == ["0", "1", "HTTP 503"]


def _counts_of_failing_deliveries(queries: CaptureQueriesContext) -> int:
    """How many of the queries counted the failing deliveries by receiver (the read whose cost
    grows with them)."""
    return sum("GROUP BY" in query["sql"] and "attempt_count" in query["sql"] for query in queries)


@pytest.mark.parametrize(("counted_for", "counts"), [(COUNTED_FOR_SECONDS, 1), (0.0, 3)])
def test_the_failing_deliveries_are_counted_once_a_scrape_interval_however_often_they_are_read(
    staff: BrowserClient, monkeypatch: pytest.MonkeyPatch, counted_for: float, counts: int,
) -> None:
    # Given a noisy receiver and a quiet one, failing
    client = client_create(name="acme")
    failing_deliveries(client, "https://noisy.example/hook", failed=NOISY, retrying=NOISY, age=timedelta(minutes=1))
    failing_deliveries(client, "https://quiet.example/hook", failed=1, retrying=0, age=timedelta(minutes=5))
    monkeypatch.setattr("console.counted.COUNTED_FOR_SECONDS", counted_for)

    # When two consoles refresh and Prometheus scrapes, within COUNTED_FOR_SECONDS
    with CaptureQueriesContext(connection) as queries:
        pages = [staff.get("/console/?fragment=1").content.decode() for _ in range(2)]
        metric = failing_receivers_metric()

    # Then the failing deliveries were counted once (each read when the interval is 0), and
    # every read shows the count: the receivers, each with its exact figures and last error
    assert _counts_of_failing_deliveries(queries) == counts
    for page in pages:
        assert row_of(section(page, "receivers"), "noisy.example")[1:4] == [str(NOISY), str(NOISY), "HTTP 503"]
        assert row_of(section(page, "receivers"), "quiet.example")[1:4] == ["0", "1", "HTTP 503"]
    assert metric == 2


def test_a_callback_hosts_link_lists_its_failing_deliveries_reading_no_other(staff: BrowserClient) -> None:
    # Given a callback host failing on two ports (one delivery made before migration 0011, with no
    # authority), a delivery of the same host that succeeded, and another host failing
    client = client_create(name="acme")
    failing_deliveries(client, "https://down.example/hook", failed=2, retrying=1, age=timedelta(minutes=5))
    failing_deliveries(client, "https://down.example:8443/other", failed=0, retrying=1, age=timedelta(minutes=2))
    Delivery.objects.filter(url__startswith="https://down.example/").update(authority="down.example")
    failing_deliveries(client, "https://elsewhere.example/down.example", failed=1, retrying=0, age=timedelta(minutes=5))
    event = Delivery.objects.first().event  # type: ignore[union-attr]
    succeeded = Delivery.objects.create(event=event, owner=client, subject_id=event.subject_id,
                                        url="https://down.example/hook", authority="down.example",
                                        state=Delivery.State.SUCCEEDED, attempt_count=1)
    failing = set(Delivery.objects.filter(url__contains="://down.example").exclude(pk=succeeded.pk).values_list("pk", flat=True))

    # When an operator follows the host's link on the console to the admin's deliveries
    receivers = section(_figures(staff), "receivers")
    (link,) = [href for href in re.findall(r'href="(/admin/webhooks/delivery/\?[^"]*)"', receivers)
               if "down.example" in href and "elsewhere" not in href]
    with CaptureQueriesContext(connection) as queries:
        response = staff.get(html.unescape(link))

    # Then the list is the host's failing deliveries, on every port, and no other
    assert response.status_code == 200
    assert {row.pk for row in response.context["cl"].result_list} == failing
    assert response.context["cl"].result_count == len(failing) == 4
    # and it reads only the failing deliveries (the partial indexes' rows), never searching every
    # delivery's URL for the host: at 1,000,000 deliveries that search and its count were each a
    # sequential scan of the table, 1.0-1.6 s a click (docs/reliability.md)
    listed = [q["sql"] for q in queries.captured_queries if 'FROM "webhooks_delivery"' in q["sql"]]
    assert listed
    assert not [sql for sql in listed if '"url"::text) LIKE' in sql], listed
    assert all("\"webhooks_delivery\".\"state\" = 'failed'" in sql for sql in listed), listed
