"""The delivery log in the admin: lists and a delivery with its attempts render."""
from __future__ import annotations

import uuid

import pytest
from django.contrib.auth import get_user_model
from django.test import Client as DjangoClient
from django.utils import timezone

from core.services import client_create
from webhooks import outbox, secrets
from webhooks.models import Delivery, DeliveryAttempt, Event

pytestmark = pytest.mark.django_db


def test_admin_pages_render() -> None:
    owner = client_create(name=f"admin-{uuid.uuid4().hex[:8]}")
    secrets.signing_secret_get_or_create(owner_id=owner.pk)
    now = timezone.now()
    event = Event.objects.create(owner=owner, subject_id=uuid.uuid4(), event_type="job.succeeded",
                                 body=outbox.event_body(event_type="job.succeeded", data={}, at=now))
    delivery = Delivery.objects.create(event=event, owner=owner, subject_id=event.subject_id,
                                       url="https://hooks.example/", state=Delivery.State.SUCCEEDED)
    DeliveryAttempt.objects.create(delivery=delivery, number=1, status_code=200, duration_ms=5,
                                   finished_at=now, response_body="ok")
    admin = get_user_model().objects.create_superuser("admin", "admin@example.com", "pw")
    browser = DjangoClient()
    browser.force_login(admin)

    for url in (
        "/admin/webhooks/delivery/",
        f"/admin/webhooks/delivery/{delivery.pk}/change/",
        "/admin/webhooks/event/",
        f"/admin/webhooks/event/{event.pk}/change/",
        "/admin/webhooks/signingsecret/",
    ):
        response = browser.get(url)
        assert response.status_code == 200, url
    page = browser.get(f"/admin/webhooks/delivery/{delivery.pk}/change/").content.decode()
    assert "ok" in page and "200" in page
    assert "whsec_" not in browser.get("/admin/webhooks/signingsecret/").content.decode()
