"""X-Request-ID: a well-formed one is kept and returned, anything else is replaced by a new id;
every answer carries one, errors and the health checks included."""
from __future__ import annotations

import re

import pytest
from django.test import Client as BrowserClient

NEW_ID = re.compile(r"[0-9a-f]{32}")


@pytest.mark.parametrize("given", [
    "3f2b9c1e-8a4d-4c55-9d3e-1b2a3c4d5e6f",
    "Root=1-67891233-abcdef012345678912345678",
    "req_01HZX3Q2ABCDEF.v2:web+1/a@b",
])
def test_a_well_formed_request_id_is_returned_as_given(db: None, given: str) -> None:
    response = BrowserClient().get("/healthz", HTTP_X_REQUEST_ID=given)

    assert response["X-Request-ID"] == given


@pytest.mark.parametrize("given", ["", "short", "has space in it", "line\nbreak-injected", "x" * 201, "<script>x</script>"])
def test_anything_else_is_replaced_by_a_new_id(db: None, given: str) -> None:
    response = BrowserClient().get("/healthz", HTTP_X_REQUEST_ID=given)

    assert NEW_ID.fullmatch(response["X-Request-ID"])


def test_every_answer_has_its_own_id_errors_included(db: None) -> None:
    browser = BrowserClient()

    answers = [browser.get("/healthz"), browser.get("/healthz"), browser.get("/api/jobs/"), browser.get("/nowhere")]

    assert [a.status_code for a in answers] == [200, 200, 401, 404]
    ids = [a["X-Request-ID"] for a in answers]
    assert all(NEW_ID.fullmatch(i) for i in ids) and len(set(ids)) == 4
