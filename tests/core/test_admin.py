"""The admin lists jobs, results and API keys for an operator."""
from __future__ import annotations

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
