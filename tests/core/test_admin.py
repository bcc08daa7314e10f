"""The admin lists jobs, results and API keys for an operator."""
from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client as HttpClient

from core.services import api_key_create, client_create
from jobs.models import Job, JobResult

pytestmark = pytest.mark.django_db


def test_admin_changelists_and_details_render() -> None:
    owner = client_create(name="acme")
    api_key_create(client=owner)
    job = Job.objects.create(owner=owner, job_name="api.tasks.hello_world", status="SUCCESS", result="hi")
    JobResult.objects.create(owner=owner, job=job, task_name=job.job_name, result="hi")
    http = HttpClient()
    http.force_login(User.objects.create_superuser("admin", "admin@example.com", "pw"))

    for url in (
        "/admin/jobs/job/", "/admin/jobs/job/?status__exact=SUCCESS", f"/admin/jobs/job/{job.pk}/change/",
        "/admin/jobs/jobresult/", "/admin/core/apikey/", "/admin/core/client/",
    ):
        response = http.get(url)
        assert response.status_code == 200, url
    assert b"acme" in http.get("/admin/core/apikey/").content


def test_with_debug_off_the_admin_cookies_are_secure_without_an_https_redirect(settings: Any) -> None:
    # The suite runs with DEBUG off and SECURE_SSL_REDIRECT off (it talks plain http).
    assert not settings.DEBUG and not settings.SECURE_SSL_REDIRECT
    User.objects.create_superuser("admin", "admin@example.com", "pw")
    http = HttpClient(enforce_csrf_checks=True)

    login_page = http.get("/admin/login/")
    signed_in = http.post(
        "/admin/login/?next=/admin/",
        {"username": "admin", "password": "pw", "csrfmiddlewaretoken": login_page.cookies["csrftoken"].value},
    )

    assert signed_in.status_code == 302, signed_in.content[:500]
    assert login_page.cookies["csrftoken"]["secure"] is True
    assert signed_in.cookies["sessionid"]["secure"] is True


def test_a_staff_password_must_be_long_and_uncommon() -> None:
    # The admin's own password form, as an operator changing theirs uses it
    http = HttpClient()
    http.force_login(User.objects.create_superuser("operator", "operator@example.com", "first-Long-passphrase-41"))

    def change_to(password: str) -> int:
        return http.post("/admin/password_change/", {
            "old_password": "first-Long-passphrase-41", "new_password1": password, "new_password2": password,
        }).status_code

    # A common password, a short one and an all-digit one are refused (the form again: 200)
    assert change_to("password1234") == 200
    assert change_to("xK9#qz") == 200
    assert change_to("894512763301") == 200
    # A long uncommon one is taken (redirect to "done")
    assert change_to("correct horse battery staple 7") == 302
