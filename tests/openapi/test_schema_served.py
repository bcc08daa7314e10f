"""Anyone may read the spec (`GET /api/schema/`: no key, so no rate limit): an API process makes
it once per format, so asking for it costs the process about what any short request does, not a
generation of the document each time (openapi/views.py)."""
from __future__ import annotations

import time

import yaml
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiYamlRenderer

from tests.conftest import Api


def test_asking_for_the_spec_again_and_again_costs_less_than_making_it_once(
    anonymous: Api, committed_spec: dict
) -> None:
    # Given what generating and writing the document costs this machine, once
    first = anonymous.get("/api/schema/")
    started = time.process_time()
    OpenApiYamlRenderer().render(SchemaGenerator().get_schema(request=None, public=True))
    once = time.process_time() - started

    # When someone without a key asks for it ten times, each Accept with a parameter of its own
    # (the live server is a thread of this process: its CPU time is the process's)
    started = time.process_time()
    answers = [
        anonymous.get("/api/schema/", headers={"Accept": f"application/vnd.oai.openapi; n={n}"}) for n in range(10)
    ]
    spent = time.process_time() - started

    # Then each answer is the committed document, and the ten together cost less than making it
    # once did, where each of them made it again
    assert first.status_code == 200 and yaml.safe_load(first.content) == committed_spec
    assert {(answer.status_code, answer.content) for answer in answers} == {(200, first.content)}
    assert answers[0].headers["Content-Type"] == first.headers["Content-Type"] == (
        "application/vnd.oai.openapi; charset=utf-8"
    )
    json = anonymous.get("/api/schema/", params={"format": "json"})
    assert json.status_code == 200 and json.json() == committed_spec
    assert spent < once, (spent, once)
