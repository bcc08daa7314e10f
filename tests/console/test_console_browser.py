"""The console in headless Chromium, as an operator sees it: signed in through the admin's login,
data in every section, every asset from the service itself, no error in the browser's console,
and the figures refreshing on their own.

`make console-screenshot` runs this test with CONSOLE_SCREENSHOT=docs/console.png: the README's
picture is this page.
"""
from __future__ import annotations

import base64
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection

from tests.conftest import REPO, worker_env
from tests.console.seed import DOWN_HOST, failing_deliveries, seed
from tests.openapi import chromium
from tests.openapi.web import start_web, stop
from tests.proxy import CountingProxy

# Not in `make test-fast`: see the README's "Two commands".
pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery staple"
SECTIONS = ("jobs", "oldest-pending", "longest-running", "queues", "failures", "receivers", "disabled-endpoints",
            "workers")


@pytest.fixture(autouse=True)
def _needs_chromium() -> None:
    chromium.require_chromium()


def signed_in(browser: chromium.DevTools, url: str) -> None:
    """The operator signs in through the admin's login and lands on the console (the events of
    the admin's login page left out: they are not the console's)."""
    chromium.admin_signed_in(browser, url, "/console/", password=PASSWORD, forget_login_page=True)


def test_the_console_renders_every_section_live_without_errors(transactional_db: Any, tmp_path: Path) -> None:
    # Given data in every section, an operator, and the service as production runs it
    seed()
    User.objects.create_superuser("operator", "operator@example.com", PASSWORD)
    web, url = start_web(worker_env(SECURE_SSL_REDIRECT="false"), tmp_path)
    try:
        with chromium.DevTools(tmp_path) as browser:
            for domain in ("Runtime.enable", "Log.enable", "Network.enable"):
                browser.call(domain)
            # When the operator signs in through the admin's login and lands on the console
            signed_in(browser, url)
            rows = browser.evaluate(
                "Object.fromEntries([...document.querySelectorAll('section')].map("
                "s => [s.id, s.querySelectorAll('tbody tr').length]))"
            )
            receivers = browser.evaluate("document.querySelector('#receivers').innerText")
            first_update = browser.evaluate("document.querySelector('#console-updated').dataset.updated")
            # Then, a refresh later, the figures are new and nothing went wrong
            browser.wait_for(lambda: browser.evaluate(
                "document.querySelector('#console-updated').dataset.updated") != first_update, timeout=20)
            live = browser.evaluate("document.querySelector('#console-live').className")
            styled = browser.evaluate("getComputedStyle(document.querySelector('section')).borderTopStyle")
            requested = browser.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
            if os.environ.get("CONSOLE_SCREENSHOT"):
                browser.call("Emulation.setDeviceMetricsOverride", width=1440, height=1300, deviceScaleFactor=1,
                             mobile=False)
                shot = browser.call("Page.captureScreenshot", format="png")
                Path(REPO / os.environ["CONSOLE_SCREENSHOT"]).write_bytes(base64.b64decode(shot["data"]))
            time.sleep(0.5)
            browser.evaluate("1")  # collects the events that came in meanwhile
            errors = chromium.page_errors(browser.events)
    finally:
        stop(web)

    assert {name: rows.get(name, 0) > 0 for name in SECTIONS} == dict.fromkeys(SECTIONS, True), rows
    assert DOWN_HOST in receivers and "Connection refused" in receivers
    assert live == "live"
    assert styled == "solid"  # the stylesheet loaded
    assert requested and all(name.startswith(url) for name in requested), requested
    assert errors == [], errors


def test_a_refresh_with_the_database_down_says_so(transactional_db: Any, tmp_path: Path) -> None:
    # Given an operator on the console, the service's database behind a proxy
    User.objects.create_superuser("operator", "operator@example.com", PASSWORD)
    database = connection.settings_dict
    proxy = CountingProxy((database["HOST"] or "127.0.0.1", int(database["PORT"] or 5432)))
    env = worker_env(SECURE_SSL_REDIRECT="false", DATABASE_URL=(
        f"postgres://{database['USER']}:{database['PASSWORD']}@{proxy.address}/{database['NAME']}?connect_timeout=2"))
    web, url = start_web(env, tmp_path)
    try:
        with chromium.DevTools(tmp_path) as browser:
            signed_in(browser, url)

            # When PostgreSQL goes away
            proxy.cut()

            # Then the next refresh marks the figures stale and says why
            browser.wait_for(lambda: "stale" in browser.evaluate("document.querySelector('#console-live').className"),
                             timeout=20)
            live = browser.evaluate("document.querySelector('#console-live').innerText")
    finally:
        stop(web)
        proxy.close()

    assert live == "Stale: the last refresh failed: The database is unreachable; retry later. (503). Reload the page"


def test_markup_a_client_slipped_into_the_page_runs_no_script(transactional_db: Any, tmp_path: Path) -> None:
    # Given an operator on the console, which shows strings of every client
    User.objects.create_superuser("operator", "operator@example.com", PASSWORD)
    web, url = start_web(worker_env(SECURE_SSL_REDIRECT="false"), tmp_path)
    try:
        with chromium.DevTools(tmp_path) as browser:
            signed_in(browser, url)

            # When the page holds a client's markup with an inline handler, as it would if a
            # template ever let a client's string through unescaped
            browser.evaluate(
                "window.outcome = null;"
                "document.addEventListener('securitypolicyviolation',"
                " event => { window.outcome = 'refused by ' + event.effectiveDirective; });"
                "document.body.insertAdjacentHTML('beforeend',"
                " '<img src=\"/static/no-such-image.png\" onerror=\"window.outcome = \\'ran\\'\">')"
            )

            # Then the browser refuses to run it: the page's policy allows the service's own
            # script files alone
            browser.wait_for(lambda: browser.evaluate("window.outcome") is not None)
            outcome = browser.evaluate("window.outcome")
    finally:
        stop(web)

    assert outcome == "refused by script-src-attr"


def test_a_clients_long_unbroken_strings_stay_within_the_page(transactional_db: Any, tmp_path: Path) -> None:
    # Given a client whose callback URLs' host is as long as a host name may be (its own domain,
    # public), failing, and whose name is long too
    seeded = seed()
    seeded.client.name = "n" * 150
    seeded.client.save()
    host = ".".join(["a" * 63] * 3) + ".example"
    failing_deliveries(seeded.client, f"https://{host}/in", failed=5, retrying=1, age=timedelta(minutes=1))
    User.objects.create_superuser("operator", "operator@example.com", PASSWORD)
    web, url = start_web(worker_env(SECURE_SSL_REDIRECT="false"), tmp_path)
    try:
        with chromium.DevTools(tmp_path) as browser:
            # (the README's picture's width: below 1300 or so the longest job type's name and the
            # longest running table's other columns fill its half of the page already)
            browser.call("Emulation.setDeviceMetricsOverride", width=1440, height=1000, deviceScaleFactor=1,
                         mobile=False)
            # When an operator opens the console
            signed_in(browser, url)
            receivers = browser.evaluate("document.querySelector('#receivers').innerText")
            page_width = browser.evaluate("document.documentElement.scrollWidth")
            window_width = browser.evaluate("window.innerWidth")
    finally:
        stop(web)

    # Then the strings wrap in their cells: every column is on the page, none pushed past its edge
    assert host in receivers.replace("\n", "")
    assert page_width <= window_width
