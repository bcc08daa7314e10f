"""Each operation's documented 404 is what the service answers for a well-formed id of nothing
(a UUID or a whole number no row has): before, every operation's example was a job's 'No such
job.', where a result, a webhook endpoint and its secret answered their own, and the job and
result lists documented a 404 they never answer."""
from __future__ import annotations

import re
import uuid
from collections.abc import Callable

from tests.conftest import Api
from tests.openapi.test_unparsable_responses import every_operation

# A well-formed id of nothing, by its path parameter's type; the legacy poll takes it in its query.
ABSENT_ID = {"string": str(uuid.UUID(int=1)), "integer": "2147483647"}
# Bodies valid enough to reach the lookup, so that an invalid body's 400 does not answer first.
BODIES = {"recover_webhook_endpoint": {"since": "2026-01-01T00:00:00Z"}}


def _absent_url(path: str, operation: dict) -> str:
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "path":
            path = path.replace(f"{{{parameter['name']}}}", ABSENT_ID[parameter["schema"]["type"]])
    if operation["operationId"] == "legacy_get_job_status":
        path += f"?job_id={ABSENT_ID['string']}"
    return path


def test_each_documented_404_example_is_the_answer_to_an_id_of_nothing(
    make_api: Callable[..., Api], committed_spec: dict
) -> None:
    # Given a client with a key, and each operation that documents a 404
    api = make_api()
    answers = []
    for method, path, operation in every_operation(committed_spec):
        if "404" in operation["responses"]:
            # When it is asked for an id no row has
            url = _absent_url(path, operation)
            assert not re.search(r"\{[^}]+\}", url), (method, path)
            answer = api.request(method.upper(), url, json=BODIES.get(operation["operationId"], {}))
            answers.append((f"{method.upper()} {path}", operation, answer))

    # Then every operation that documents a 404 answers it, with the body of its own example (the
    # one that is not the no-route answer every id-taking path shares)
    assert {where for where, _, _ in answers} >= {
        "GET /api/job/", "GET /api/jobs/{job_id}/", "GET /api/results/{result_id}/",
        "DELETE /api/webhook-endpoints/{endpoint_id}/", "GET /api/jobs/{job_id}/deliveries/",
    }, answers
    for where, operation, answer in answers:
        examples = operation["responses"]["404"]["content"]["application/json"]["examples"]
        assert answer.status_code == 404, (where, answer.text)
        assert answer.json() == examples["NotFound"]["value"], (where, answer.text)
