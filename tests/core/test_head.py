"""HEAD is answered as GET would be, without a body (core/middleware.py HeadWithoutBodyMiddleware),
by gunicorn as production runs it: no line in its log for a body it had to drop."""
from __future__ import annotations

import time
from pathlib import Path

import requests

from tests.conftest import Api

DROPPED = "no-body response"


def test_head_is_answered_as_get_without_a_body_and_without_a_warning(served: Api, tmp_path: Path) -> None:
    # Given a finished job (its answer the same to both asks), and requests without a key, with
    # it, and for a stream
    job = served.wait(served.submit("api.tasks.hello_world")["id"])
    key = {"Authorization": f"Bearer {served.key}"}
    asked = [("/healthz", {}), ("/api/jobs/", {}), (f"/api/jobs/{job['id']}/", key), ("/api/schema/", {})]

    # When each is asked with HEAD, and with GET
    answers = [(requests.head(served.base_url + path, headers=headers, timeout=10),
                requests.get(served.base_url + path, headers=headers, timeout=10)) for path, headers in asked]
    # (a stream on a connection kept alive, asked something else next)
    with requests.Session() as session:
        stream = session.head(served.base_url + "/api/events/", headers={**key, "Accept": "text/event-stream"},
                              timeout=10)
        after_it = session.get(served.base_url + "/healthz", timeout=10)

    # Then HEAD says what GET says, without a body, and gunicorn had nothing to drop
    for head, get in answers:
        assert (head.status_code, head.content) == (get.status_code, b"")
        assert head.headers["Content-Type"] == get.headers["Content-Type"]
        assert int(head.headers["Content-Length"]) == len(get.content)
    assert stream.status_code == 200
    assert stream.headers["Content-Type"] == "text/event-stream"
    assert after_it.status_code == 200  # the connection it came on answers the next request
    time.sleep(0.5)  # the log is written by another process
    assert DROPPED not in (tmp_path / "gunicorn.log").read_text()
