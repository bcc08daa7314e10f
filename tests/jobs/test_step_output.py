"""A step whose output PostgreSQL refuses (a U+0000, a lone surrogate, a NaN) fails its job at
once: the write's error is not the database failing, which a step's task retries."""
from __future__ import annotations

from typing import Any

import pytest
from django.test import Client as DjangoClient
from django.utils import timezone

from core.services import api_key_create, client_create
from jobs import dispatch, tasks
from jobs.models import Job
from jobs.types import checklist
from tests.fakes.openai_server import FakeOpenAI, Reply

CHECKLIST = "api.tasks.generate_checklist_from_guidelines"


def test_a_step_whose_output_cannot_be_stored_fails_its_job_after_one_run(
    transactional_db: Any, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a step that returns what PostgreSQL refuses: the checklist's first, its own check of
    # the model's answer taken away (no built-in type's output can hold one otherwise), and a
    # model that would answer well on the next call
    monkeypatch.setattr(checklist, "unstorable_character", lambda value: None)
    scenario = fake_openai.scenario()
    summary = f"Hand over in SBAR order. ({scenario.token})"
    scenario.add(Reply.answer(f'{{"summary": "{summary}\\u0000"}}'), Reply.answer({"summary": summary}))
    owner = client_create(name=f"step-output-{scenario.token[-8:]}")
    job = Job.objects.create(owner=owner, job_name=CHECKLIST, dispatched_at=timezone.now(),
                             payload={"guidelines": f"Hand over well. ({scenario.token})"})

    # When its first step runs (here, in this process)
    outcome = tasks.job_run_step.apply(kwargs=dispatch.job_signatures(job=job)[0].kwargs)

    # Then the job fails saying its output cannot be stored, after one call of the model
    assert outcome.state == "SUCCESS"
    http = DjangoClient(HTTP_AUTHORIZATION=f"Bearer {api_key_create(client=owner)}")
    failed = http.get(f"/api/jobs/{job.id}/").json()
    assert len(scenario.requests) == 1
    assert (failed["status"], failed["error"]["type"]) == ("FAILURE", "unstorable_output"), failed
    assert failed["error"]["message"] == "Step 1's output cannot be stored (PostgreSQL refused it)."
    # and the worker's line about it says why without the output: PostgreSQL's error quotes the
    # JSON it refused up to the U+0000 ("CONTEXT:  JSON data, line 1: {"summary": "Hand over..."),
    # which its traceback wrote out, a client's data in the log
    [line] = [record for record in caplog.records if "cannot be stored" in record.getMessage()]
    assert scenario.token not in caplog.text, caplog.text
    assert line.levelname == "WARNING" and "unsupported Unicode escape sequence" in line.getMessage(), line
