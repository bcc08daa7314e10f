"""A form post refused by CSRF (a cookie the browser dropped, a proxy that changes the address):
403 saying why, on a page the Content-Security-Policy lets render (Django's own styles itself
inline, which the policy blocks), and never with DEBUG's help. The API, on Bearer keys, has no
CSRF to fail."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client as BrowserClient

from tests.conftest import worker_env
from tests.openapi import chromium
from tests.openapi.web import start_web, stop

PASSWORD = "correct horse battery staple"


@pytest.mark.django_db
def test_a_login_from_another_origin_answers_403_saying_why() -> None:
    browser = BrowserClient(enforce_csrf_checks=True)

    response = browser.post("/admin/login/", {"username": "operator", "password": PASSWORD},
                            headers={"Origin": "https://proxy.example"}, secure=True)

    assert response.status_code == 403
    body = response.content.decode()
    assert "CSRF verification failed" in body and "does not match any trusted origins" in body, body
    assert "X-Forwarded-Proto" in body and "<style" not in body and "DEBUG" not in body, body
    assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")


def test_the_refused_login_page_renders_under_the_content_security_policy(
    transactional_db: Any, tmp_path: Path
) -> None:
    chromium.require_chromium()
    # Given the service as production runs it (gunicorn, DEBUG off) and an operator
    User.objects.create_superuser("operator", "operator@example.com", PASSWORD)
    web, url = start_web(worker_env(SECURE_SSL_REDIRECT="false"), tmp_path)
    try:
        with chromium.DevTools(tmp_path) as browser:
            for domain in ("Runtime.enable", "Log.enable"):
                browser.call(domain)
            # When the operator's browser has lost its CSRF cookie and signs in
            browser.open(f"{url}/admin/login/")
            browser.call("Network.clearBrowserCookies")
            browser.events.clear()
            browser.evaluate(
                "document.querySelector('#id_username').value = 'operator';"
                f"document.querySelector('#id_password').value = {PASSWORD!r};"
                "document.querySelector('#login-form').submit()"
            )
            browser.wait_for(lambda: browser.evaluate("document.title") == "403 Forbidden"
                             and browser.evaluate("document.readyState") == "complete")
            text = browser.evaluate("document.body.innerText")
            styled = browser.evaluate("getComputedStyle(document.body).fontFamily")
            browser.evaluate("1")  # collects the events that came in meanwhile
            # The 403 itself, which the browser logs as a failed load of the page, is the test's
            errors = [error for error in chromium.page_errors(browser.events)
                      if not (isinstance(error, dict) and error.get("source") == "network"
                              and error.get("url") == f"{url}/admin/login/")]
    finally:
        stop(web)

    # Then the page says why, styled, with nothing the policy refused
    assert errors == [], errors
    assert "CSRF cookie not set." in text and "allow them for this site" in text, text
    assert "sans-serif" in styled or "Segoe" in styled, styled


def test_the_api_has_no_csrf_to_fail(make_api: Any) -> None:
    # A client's post from a page of another origin: its Bearer key is what authenticates it
    response = make_api().post("/api/jobs/", json={"job_name": "api.tasks.hello_world", "payload": {}},
                               headers={"Origin": "https://elsewhere.example", "Cookie": "csrftoken=x"})
    assert response.status_code == 202, response.text
