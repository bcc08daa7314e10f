"""A staff page the database could not serve (a table locked past API_DB_LOCK_TIMEOUT_SECONDS, the
database out of reach, a full disk) answers 503 as a page to the operator's browser, which
showed the service's JSON error raw; the console's script, and any client that does not ask for
HTML first, still get the JSON error it reads."""
from __future__ import annotations

import html
import re
from collections.abc import Callable
from pathlib import Path

import requests

from tests.conftest import Api, serving
from tests.console.test_database_down import operator_cookie
from tests.locks import rows_held

LOCKED = "LOCK TABLE jobs_job IN ACCESS EXCLUSIVE MODE"
# What a browser's navigation and form posts ask for (Firefox's), and fetch()'s own.
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
FETCH = "*/*"


def test_with_the_jobs_table_locked_the_staffs_pages_answer_a_page_and_the_consoles_script_json(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    # Given the service as production runs it, its lock waits bounded to 1 s, an operator signed
    # in, and a client's job
    signed_in = operator_cookie()
    with serving(make_api(), tmp_path / "gunicorn.log", API_DB_LOCK_TIMEOUT_SECONDS="1") as (api, _):
        job = api.submit("api.tasks.hello_world")

        def get(path: str, accept: str) -> requests.Response:
            return requests.get(api.base_url + path, headers={**signed_in, "Accept": accept}, timeout=30)

        # When the jobs table is locked, and the operator opens the jobs' list, the job's page
        # and the console in the browser, while the console's script refreshes its figures and
        # a script reads the jobs' list
        with rows_held(LOCKED):
            pages = [get(path, BROWSER) for path in ("/admin/jobs/job/", f"/admin/jobs/job/{job['id']}/change/",
                                                    "/console/")]
            refreshed = get("/console/?fragment=1", FETCH)
            scripted = get("/admin/jobs/job/", FETCH)
        stylesheet = requests.get(api.base_url + "/static/admin/css/base.css", timeout=30)

    # Then each page the browser opened is a 503 page, styled as the admin's, saying what is
    # wrong in the operator's words and when to retry, and nothing of the error behind it
    said = []
    for page in pages:
        assert page.status_code == 503 and page.headers["Content-Type"].startswith("text/html"), (
            page.url, page.status_code, page.headers["Content-Type"], page.text[:300])
        assert page.headers["Retry-After"] == "5" and "Accept" in page.headers["Vary"], page.headers
        assert 'href="/static/admin/css/base' in page.text and "Reload this page in 5 s" in page.text, page.text
        assert not re.search(r"Traceback|lock timeout|SELECT|jobs_job|psycopg", page.text, re.IGNORECASE), page.text
        found = re.search(r'<p id="message">(.*?)</p>', page.text, re.DOTALL)
        said.append(html.unescape(found.group(1)) if found else page.text)
    assert said[0] == said[1] == ("A table this request needs is locked (a migration, a maintenance); "
                                  "retry later."), said
    assert "The console's figures could not be read" in said[2], said
    assert stylesheet.status_code == 200
    # And the console's script, and the script reading the list, get the JSON error they read
    for answer, words in ((refreshed, "OPERATOR_READ_TIMEOUT_SECONDS"), (scripted, "A table this request needs")):
        assert answer.status_code == 503 and answer.headers["Content-Type"] == "application/json", answer.text[:300]
        error = answer.json()["error"]
        assert error["code"] == "database_busy" and words in error["message"], error
        assert answer.headers["Retry-After"] == "5" and "Accept" in answer.headers["Vary"], answer.headers
