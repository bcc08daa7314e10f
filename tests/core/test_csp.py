"""The pages a browser opens carry a Content-Security-Policy: the admin's and the console's run
no script but the service's own files and load nothing from elsewhere; the docs pages have their
own, which lets Redoc and Swagger UI start (tests/openapi/test_docs_browser.py renders them under
it, tests/console/test_console_browser.py the console and the admin)."""
from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client as BrowserClient

from core.services import client_create
from jobs.models import Job


def _policy(response: Any) -> dict[str, list[str]]:
    header = response.headers.get("Content-Security-Policy")
    assert header, f"{response.status_code} without a Content-Security-Policy"
    directives = [part.split() for part in header.split(";") if part.strip()]
    return {name: values for name, *values in directives}


@pytest.mark.django_db
def test_the_admin_and_the_console_run_only_the_services_own_scripts() -> None:
    # Given an operator, and a client's job with a string of its own choosing on the staff's pages
    staff = BrowserClient()
    staff.force_login(User.objects.create_user("operator", is_staff=True, is_superuser=True))
    job = Job.objects.create(owner=client_create(name="acme"), job_name="api.tasks.hello_world",
                             payload={"message": "<img src=x onerror=alert(1)>"})
    pages = ["/console/", "/console/?fragment=1", "/admin/", "/admin/jobs/job/", f"/admin/jobs/job/{job.pk}/change/",
             f"/admin/jobs/job/{job.pk}/delete/"]

    # When an operator opens them, and anyone the login page
    answers = {page: staff.get(page) for page in pages}
    answers["/admin/login/"] = BrowserClient().get("/admin/login/")

    # Then each runs only scripts and styles the service serves, and no other site may frame it
    for page, response in answers.items():
        assert response.status_code == 200, page
        policy = _policy(response)
        assert policy["script-src"] == ["'self'"], page
        assert policy["style-src"] == ["'self'"], page
        assert policy["default-src"] == ["'self'"], page
        assert policy["connect-src"] == ["'self'"], page
        assert policy["frame-ancestors"] == ["'none'"], page
        assert policy["base-uri"] == ["'none'"], page
        assert policy["object-src"] == ["'none'"], page
        assert response.headers["X-Frame-Options"] == "DENY", page
        assert response.headers["X-Content-Type-Options"] == "nosniff", page


@pytest.mark.django_db
def test_the_docs_pages_have_their_own_policy() -> None:
    browser = BrowserClient()

    redoc = _policy(browser.get("/api/docs/"))
    swagger = _policy(browser.get("/api/docs/swagger/"))

    # Both start their viewer with an inline script; Redoc searches in a worker from a blob: URL
    for policy in (redoc, swagger):
        assert policy["script-src"][:2] == ["'self'", "'unsafe-inline'"]
        assert policy["connect-src"] == ["'self'"]
        assert policy["frame-ancestors"] == ["'none'"]
    assert redoc["worker-src"] == ["'self'", "blob:"]


@pytest.mark.django_db
def test_swagger_ui_opens_no_window_another_site_may_reach() -> None:
    # drf-spectacular sends `unsafe-none` (for OAuth popups, which this API has none of)
    answers = {page: BrowserClient().get(page) for page in ("/api/docs/swagger/", "/api/docs/", "/admin/login/")}

    for page, response in answers.items():
        assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin", page
