"""With DEBUG off the admin's cookies are Secure, and its login still works in a browser on
http://127.0.0.1 (Chromium treats loopback as a secure context), as `make run` serves it; its
pages work under their Content-Security-Policy (core/csp.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from core.services import client_create
from jobs.models import Job
from tests.conftest import worker_env
from tests.openapi import chromium
from tests.openapi.web import start_web, stop

# Not in `make test-fast`: see the README's "Two commands".
pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _needs_chromium() -> None:
    chromium.require_chromium()


def test_the_admin_login_works_over_plain_http_on_loopback_with_debug_off(
    transactional_db: Any, tmp_path: Path
) -> None:
    # Given an operator, and the service as production runs it (gunicorn, DEBUG off), without
    # SECURE_SSL_REDIRECT, on plain http://127.0.0.1
    User.objects.create_superuser("operator", "operator@example.com", PASSWORD)
    web, url = start_web(worker_env(SECURE_SSL_REDIRECT="false"), tmp_path)
    try:
        with chromium.DevTools(tmp_path) as browser:
            # When the operator signs in through the login form
            chromium.admin_signed_in(browser, url, "/admin/", password=PASSWORD)

            # Then the admin's index shows, and every cookie was Secure (the session's, CSRF's, and
            # the one exempting this browser from the username's failed-login limit)
            title = browser.evaluate("document.title")
            cookies = browser.call("Network.getAllCookies")["cookies"]
    finally:
        stop(web)

    assert title.startswith("Site administration")
    assert {cookie["name"]: cookie["secure"] for cookie in cookies} == {
        "csrftoken": True, "sessionid": True, "admin_signed_in_as": True,
    }


def test_the_admins_scripts_run_under_its_content_security_policy(transactional_db: Any, tmp_path: Path) -> None:
    # Given an operator, a client's queued job (claimed for dispatch as a submission leaves it: the
    # suite's beat sweeps a committed job left unclaimed, and its worker would finish it, taking
    # its Cancel away), and the service as production runs it
    User.objects.create_superuser("operator", "operator@example.com", PASSWORD)
    job = Job.objects.create(owner=client_create(name="acme"), job_name="api.tasks.hello_world",
                             dispatched_at=timezone.now())
    web, url = start_web(worker_env(SECURE_SSL_REDIRECT="false"), tmp_path)
    try:
        with chromium.DevTools(tmp_path) as browser:
            for domain in ("Runtime.enable", "Log.enable"):
                browser.call(domain)
            # When the operator signs in, selects every job of the list and opens the job
            chromium.admin_signed_in(browser, url, "/admin/jobs/job/", password=PASSWORD)
            browser.evaluate("document.querySelector('#action-toggle').click()")
            counter = browser.evaluate("document.querySelector('.action-counter').innerText")
            browser.open(f"{url}/admin/jobs/job/{job.pk}/change/")
            buttons = browser.evaluate("[...document.querySelectorAll('.objectaction-item')].map(b => b.textContent)")
            browser.evaluate("1")  # collects the events that came in meanwhile
            errors = chromium.page_errors(browser.events)
    finally:
        stop(web)

    # Then the list's script counted the selection, and no script, style or load was refused
    assert counter == "1 of 1 selected"
    assert [button.strip() for button in buttons] == ["Cancel"]
    assert errors == [], errors
