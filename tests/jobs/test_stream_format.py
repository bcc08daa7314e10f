"""A stream's bytes read by the WHATWG event-stream rules, whatever a job carries.

An event-stream's lines end at CR, LF or CRLF; a line that starts with a field name sets that
field. A job's payload, metadata or result holding those characters (or the ones other readers
take for line ends: U+0085, U+2028) must stay inside its one `data:` line, never end it, start
another field or dispatch an event early.
"""
from __future__ import annotations

import json
import re
from typing import Any

from tests.conftest import Api

HOSTILE = "a\r\nevent: job.failed\nid: 1\rdata: {}\r\n\r\nretry: 1\u0085b\u2028c\u2029d\x1e"
# WHATWG HTML, 9.2.6: a line ends at CRLF, a lone LF or a lone CR; nothing else.
LINE_END = re.compile(r"\r\n|\r|\n")


def whatwg_messages(stream: str) -> list[dict[str, Any]]:
    """The stream's dispatched messages, each {field: value} (`data` its lines joined by LF), and
    the comments as {"comment": text}, parsed as the HTML standard's EventSource does."""
    messages: list[dict[str, Any]] = []
    fields: dict[str, Any] = {}
    data: list[str] = []
    for line in LINE_END.split(stream):
        if line == "":
            if fields or data:
                messages.append({**fields, **({"data": "\n".join(data)} if data else {})})
            fields, data = {}, []
        elif line.startswith(":"):
            messages.append({"comment": line[1:]})
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            else:
                fields[name] = value
    return messages


def test_a_jobs_text_stays_inside_its_events_data_line(api: Api) -> None:
    # Given a finished job whose payload, metadata and result hold line ends and field names
    created = api.post(
        "/api/jobs/",
        json={"job_name": "api.tasks.hello_world", "payload": {"message": HOSTILE}, "metadata": {"k": HOSTILE}},
        headers={"Prefer": "wait=10"},
    ).json()
    assert created["status"] == "SUCCESS"

    # When its whole history is streamed
    response = api.get(f"/api/jobs/{created['id']}/events/", headers={"Accept": "text/event-stream", "Last-Event-ID": "0"})

    # Then the reader sees the reconnect time and the job's events, nothing else, each `data:`
    # the job's JSON as it is
    assert response.headers["Content-Type"] == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    messages = whatwg_messages(response.content.decode("utf-8"))
    assert messages[0] == {"retry": "1000"}
    events = messages[1:]
    assert [m["event"] for m in events] == ["job.started", "job.succeeded"]
    for message in events:
        assert set(message) == {"event", "id", "data"} and message["id"].isdigit()
        body = json.loads(message["data"])
        assert body["type"] == message["event"]
        assert body["data"]["payload"] == {"message": HOSTILE} and body["data"]["metadata"] == {"k": HOSTILE}
    assert json.loads(events[-1]["data"])["data"] == api.get(f"/api/jobs/{created['id']}/").json()
