"""The admin lists endpoints with their health, and disabling or enabling one there holds or
resumes its deliveries as the client's own PATCH does."""
from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client as DjangoClient
from django.urls import reverse
from django.utils import timezone

from core.services import client_create
from webhooks import reschedule
from webhooks.models import Delivery, Endpoint, Event

pytestmark = pytest.mark.django_db


def rescheduled(endpoint: Endpoint) -> None:
    """What the deliveries worker does once the change commits (this test's transaction never
    does): hold or resume the endpoint's deliveries (webhooks/reschedule.py)."""
    reschedule.endpoint_reschedule(endpoint_id=endpoint.pk, version=endpoint.schedule_version, before=timezone.now())


def test_endpoints_are_listed_with_their_health_and_disabled_or_enabled_by_action(admin_client: DjangoClient) -> None:
    owner = client_create(name=f"admin-endpoints-{uuid.uuid4().hex[:6]}")
    endpoint = Endpoint.objects.create(owner=owner, url="https://hooks.example.com/e", consecutive_failures=7,
                                       last_error="Connection refused", event_types=["job.succeeded"])
    event = Event.objects.create(owner=owner, subject_id=uuid.uuid4(), event_type="job.succeeded", body=b"{}")
    pending = Delivery.objects.create(event=event, owner=owner, subject_id=event.subject_id, endpoint=endpoint,
                                      url=endpoint.url, next_attempt_at=timezone.now())

    listed = admin_client.get(reverse("admin:webhooks_endpoint_changelist"))
    assert listed.status_code == 200
    assert b"hooks.example.com" in listed.content and b"Connection refused" in listed.content

    changelist = reverse("admin:webhooks_endpoint_changelist")
    admin_client.post(changelist, {"action": "disable", "_selected_action": [str(endpoint.pk)]})
    endpoint.refresh_from_db()
    rescheduled(endpoint)
    pending.refresh_from_db()
    assert (endpoint.enabled, endpoint.disabled_reason, pending.state) == (False, "client", "endpoint_disabled")
    assert endpoint.disabled_at is not None

    admin_client.post(changelist, {"action": "enable", "_selected_action": [str(endpoint.pk)]})
    endpoint.refresh_from_db()
    rescheduled(endpoint)
    pending.refresh_from_db()
    assert (endpoint.enabled, endpoint.disabled_at, pending.state) == (True, None, "pending")


def test_an_endpoints_page_names_its_headers_without_their_values(admin_client: DjangoClient) -> None:
    # Custom headers are how a receiver often authenticates the sender: a secret like the
    # signing secret, which the admin never shows either.
    owner = client_create(name=f"admin-headers-{uuid.uuid4().hex[:6]}")
    endpoint = Endpoint.objects.create(owner=owner, url="https://hooks.example.com/e",
                                       headers={"Authorization": "Bearer rcv-s3cr3t", "X-Team": "billing"})

    page = admin_client.get(reverse("admin:webhooks_endpoint_change", args=[endpoint.pk]))

    assert page.status_code == 200
    html = page.content.decode()
    assert "Authorization" in html and "X-Team" in html
    assert "rcv-s3cr3t" not in html and "billing" not in html


@pytest.mark.parametrize("how", ["page", "selected"])
def test_an_endpoint_deleted_in_the_admin_cancels_its_deliveries_as_the_clients_delete_does(
    admin_client: DjangoClient, how: str
) -> None:
    # Given an endpoint with a delivery pending and one held (while it was disabled)
    owner = client_create(name=f"admin-delete-{uuid.uuid4().hex[:6]}")
    endpoint = Endpoint.objects.create(owner=owner, url="https://hooks.example.com/e", event_types=["job.succeeded"])
    deliveries = []
    for state in (Delivery.State.PENDING, Delivery.State.ENDPOINT_DISABLED):
        event = Event.objects.create(owner=owner, subject_id=uuid.uuid4(), event_type="job.succeeded", body=b"{}")
        deliveries.append(Delivery.objects.create(event=event, owner=owner, subject_id=event.subject_id,
                                                  endpoint=endpoint, url=endpoint.url, state=state,
                                                  next_attempt_at=timezone.now()))

    # When an operator deletes it in the admin (its page's Delete, or the list's action)
    if how == "page":
        response = admin_client.post(reverse("admin:webhooks_endpoint_delete", args=[endpoint.pk]), {"post": "yes"})
    else:
        response = admin_client.post(reverse("admin:webhooks_endpoint_changelist"), {
            "action": "delete_selected", "post": "yes", "_selected_action": [str(endpoint.pk)],
        })
    assert response.status_code == 302

    # Then its deliveries are cancelled, as the client's DELETE does: none is left pending (or
    # held) without its endpoint, to go to its URL signed with the client's own secret (or to
    # keep its event past the retention for ever)
    assert not Endpoint.objects.filter(pk=endpoint.pk).exists()
    assert [Delivery.objects.get(pk=d.pk).state for d in deliveries] == [Delivery.State.CANCELED] * 2


def test_an_endpoints_page_offers_disable_and_enable_only_to_who_may_change_endpoints() -> None:
    # Given an endpoint with a delivery, a staff user who may only view them, and one who may change them
    owner = client_create(name=f"admin-endpoints-{uuid.uuid4().hex[:6]}")
    endpoint = Endpoint.objects.create(owner=owner, url="https://hooks.example.com/e")
    event = Event.objects.create(owner=owner, subject_id=uuid.uuid4(), event_type="job.succeeded", body=b"{}")
    delivery = Delivery.objects.create(event=event, owner=owner, subject_id=event.subject_id, endpoint=endpoint,
                                       url=endpoint.url, next_attempt_at=timezone.now())
    viewer = User.objects.create_user("viewer", "viewer@example.com", "pw", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_endpoint", "view_delivery"]))
    viewing, changing = DjangoClient(), DjangoClient()
    viewing.force_login(viewer)
    changing.force_login(User.objects.create_superuser("admin", "admin@example.com", "pw"))
    endpoint_page = reverse("admin:webhooks_endpoint_change", args=(endpoint.pk,))
    delivery_page = reverse("admin:webhooks_delivery_change", args=(delivery.pk,))

    # Then the viewer's pages offer none of the buttons whose POST would answer it 403
    for page, buttons in ((endpoint_page, ("actions/disable/", "actions/enable/")),
                          (delivery_page, ("actions/redeliver/",))):
        viewed, changed = viewing.get(page), changing.get(page)
        assert viewed.status_code == changed.status_code == 200
        for button in buttons:
            assert button in changed.content.decode() and button not in viewed.content.decode(), (page, button)
