"""A path without its trailing slash (core/middleware.py CommonMiddleware): a request with a body
is sent on with its method and body kept, not turned into a GET."""
from __future__ import annotations

from typing import Any

import pytest

from jobs.models import Job
from tests.conftest import Api


@pytest.mark.parametrize("debug", [False, True])
def test_a_submission_to_the_path_without_its_slash_submits_the_job(api: Api, settings: Any, debug: bool) -> None:
    # Given a client that leaves the trailing slash off, in production or with DEBUG on
    settings.DEBUG = debug

    # When it submits a job to /api/jobs
    response = api.post("/api/jobs", json={"job_name": "api.tasks.hello_world", "payload": {"message": "no slash"}})

    # Then it is sent on to /api/jobs/ with its method and body (308), and the job is accepted:
    # a 301 had the client repeat it as a GET, which listed its jobs and submitted nothing
    assert [(r.status_code, r.headers["Location"]) for r in response.history] == [(308, "/api/jobs/")]
    assert response.status_code == 202, response.text
    assert Job.objects.get(pk=response.json()["id"]).payload == {"message": "no slash"}


def test_a_read_of_the_path_without_its_slash_is_redirected_as_before(api: Api) -> None:
    response = api.get("/api/jobs", allow_redirects=False)

    assert (response.status_code, response.headers["Location"]) == (301, "/api/jobs/")
