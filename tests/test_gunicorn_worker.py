"""A request gunicorn cannot parse (a request line past its limit, too many or too long headers, a
malformed request line, an unknown HTTP version) is answered in the API's error shape, with a code
of the list (core/error_codes.py) and gunicorn's status, by the API's worker (gunicorn_worker.py).
Before, it was gunicorn's HTML page, which a client generated from the spec could not parse.
gunicorn's own 500 is the API's server_error, and every answer the worker writes (its 403 too)
carries an X-Request-ID that gunicorn's log line for it names: before, none did. Under
LOG_FORMAT=json gunicorn's own lines are JSON, as the application's. Its access line names the
X-Request-ID its answer carried, as the application's lines of the same request do: before, none
did. Sent as raw bytes to gunicorn as production runs it."""
from __future__ import annotations

import contextlib
import http
import http.client
import io
import json
import logging
import os
import re
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from django.db import connection

from core import logs
from core.error_codes import ERROR_CODES
from gunicorn_log_format import RequestIdEnded, json_formatter, printable
from gunicorn_worker import RequestIdNamed, answering
from tests.conftest import Api, serving

# Written into each request: no answer may echo it.
MARKER = b"<script>alert('sent')</script>"

UNPARSABLE = [
    ("a 10 KB request line", b"GET /api/jobs/?q=" + b"a" * 10_000 + MARKER + b" HTTP/1.1\r\nHost: localhost\r\n\r\n",
     "request_line_too_long"),
    ("a 10 KB header", b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 10_000 + MARKER + b"\r\n\r\n",
     "request_headers_too_large"),
    ("200 headers", b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n"
     + b"".join(b"X-Header-%d: %s\r\n" % (i, MARKER) for i in range(200)) + b"\r\n", "request_headers_too_large"),
    ("a garbage request line", MARKER + b"\r\n\r\n", "bad_request"),
    ("a header without a colon", b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + MARKER + b"\r\n\r\n",
     "bad_request"),
    ("HTTP/9.9", b"GET /healthz?" + MARKER + b" HTTP/9.9\r\nHost: localhost\r\n\r\n", "bad_request"),
    ("an Expect other than 100-continue", b"POST /api/jobs/ HTTP/1.1\r\nHost: localhost\r\nExpect: " + MARKER
     + b"\r\nContent-Length: 2\r\n\r\n{}", "expectation_failed"),
    ("a Transfer-Encoding of br", b"POST /api/jobs/ HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: br\r\n\r\n",
     "unsupported_transfer_coding"),
]


def send_raw(api: Api, sent: bytes) -> tuple[http.client.HTTPResponse, bytes]:
    """The server's answer to the bytes `sent` on a new connection, and its body."""
    address = urlsplit(api.base_url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(sent)
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        return answer, answer.read()


@pytest.mark.parametrize(("sent", "code"), [(sent, code) for _, sent, code in UNPARSABLE],
                         ids=[kind for kind, _, _ in UNPARSABLE])
def test_a_request_the_server_cannot_parse_is_answered_in_the_error_shape(
    make_api: Callable[..., Api], tmp_path: Path, sent: bytes, code: str
) -> None:
    # Given the API as production runs it
    log_path = tmp_path / "gunicorn.log"
    with serving(make_api(), log_path) as (api, _):
        # When a client sends a request gunicorn cannot parse, then another one a moment later
        answer, body = send_raw(api, sent)
        again, _ = send_raw(api, sent)
        # And a probe asks /healthz on a new connection
        healthy = requests.get(api.base_url + "/healthz", timeout=10)

    # Then the answer is the API's error shape, with the kind's code and its listed status, and
    # gunicorn closes the connection as it did
    assert answer.status == ERROR_CODES[code].status, (answer.status, body)
    # With the status's own reason phrase (gunicorn writes "501 Bad Request")
    assert answer.reason == http.HTTPStatus(answer.status).phrase
    assert answer.getheader("Content-Type") == "application/json", body
    assert answer.getheader("Connection") == "close"
    parsed = json.loads(body)
    assert list(parsed) == ["error"] and set(parsed["error"]) == {"code", "message", "details"}, parsed
    assert parsed["error"]["code"] == code and parsed["error"]["details"] is None, parsed
    # And nothing of what the client sent comes back
    assert b"script" not in body and b"sent" not in body, body
    # And the server goes on serving: the next request alike, and /healthz
    assert again.status == answer.status
    assert healthy.status_code == 200
    # And each answer carries an X-Request-ID of its own, as the API's are made
    assert NEW_REQUEST_ID.fullmatch(answer.getheader("X-Request-ID", "")), answer.getheaders()
    assert NEW_REQUEST_ID.fullmatch(again.getheader("X-Request-ID", "")), again.getheaders()
    assert answer.getheader("X-Request-ID") != again.getheader("X-Request-ID")
    # And gunicorn's own WARNING is still written, once a minute per process
    # (core.log_volume.InvalidRequests): one line for the two, naming the first one's id
    said = [line for line in log_path.read_text().splitlines() if "Invalid request from ip=" in line]
    assert len(said) == 1, said
    assert said[0].endswith(f" request_id={answer.getheader('X-Request-ID')}"), said


# What core/request_context.py makes for a request that sent no id of its own.
NEW_REQUEST_ID = re.compile(r"[0-9a-f]{32}")


def test_a_request_failing_outside_djangos_handler_is_a_server_error_with_its_request_id(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    # Given the API as production runs it, its access log on (in the text format)
    log_path = tmp_path / "gunicorn.log"
    with serving(make_api(), log_path, WEB_ACCESS_LOG="-") as (api, _):
        # When a request fails in gunicorn before Django sees it: a SCRIPT_NAME (a proxy's
        # header) its path does not start with is gunicorn's 500
        answer, body = send_raw(api, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nSCRIPT_NAME: /elsewhere\r\n\r\n")
        # And the application answers a request with an X-Request-ID of its client's
        healthy = requests.get(api.base_url + "/healthz", headers={"X-Request-ID": "trace-0123456789"}, timeout=10)

    # Then it is the API's server_error, with an X-Request-ID its error line and its access
    # line name
    assert answer.status == 500 and answer.reason == "Internal Server Error", body
    assert answer.getheader("Content-Type") == "application/json", body
    assert json.loads(body) == {"error": {"code": "server_error", "message": "Internal server error.", "details": None}}
    request_id = answer.getheader("X-Request-ID", "")
    assert NEW_REQUEST_ID.fullmatch(request_id), answer.getheaders()
    said = [line for line in log_path.read_text().splitlines() if request_id in line]
    assert len(said) == 2 and "SCRIPT_NAME" in said[0], log_path.read_text()
    # Its error line gunicorn's WARNING, without a traceback (docs/api.md)
    assert "[WARNING] Invalid request from ip=" in said[0] and "Traceback" not in log_path.read_text(), said
    assert '"GET /healthz HTTP/1.1" 500 ' in said[1] and said[1].endswith(f" request_id={request_id}"), said
    # And the access line of the application's answer ends with the id it carried, the client's
    assert healthy.headers["X-Request-ID"] == "trace-0123456789"
    [access] = [line for line in log_path.read_text().splitlines() if "trace-0123456789" in line]
    assert '"GET /healthz HTTP/1.1" 200 ' in access and access.endswith(" request_id=trace-0123456789"), access


# A request whose request line and headers gunicorn read, then refused: Content-Length may be sent once.
TWICE_CONTENT_LENGTH = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"


def test_an_unparsable_request_has_an_access_line_with_its_id_when_gunicorn_read_its_headers(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    # Given the API as production runs it, its access log on
    log_path = tmp_path / "gunicorn.log"
    with serving(make_api(), log_path, WEB_ACCESS_LOG="-") as (api, _):
        # When a client sends Content-Length twice, twice in the same minute, then a request line
        # gunicorn cannot parse
        first, _ = send_raw(api, TWICE_CONTENT_LENGTH)
        second, _ = send_raw(api, TWICE_CONTENT_LENGTH)
        garbage, _ = send_raw(api, MARKER + b"\r\n\r\n")

    # Then each Content-Length answer's id is on its access line, the second's too, whose WARNING
    # the minute's limit dropped (docs/api.md); the request line gunicorn could not parse has none
    assert first.status == second.status == garbage.status == 400
    lines = log_path.read_text().splitlines()
    for answer in (first, second):
        request_id = answer.getheader("X-Request-ID")
        [access] = [line for line in lines if '"GET /healthz HTTP/1.1" 400 ' in line and request_id in line]
        assert access.endswith(f" request_id={request_id}"), lines
    assert not any(garbage.getheader("X-Request-ID") in line for line in lines), lines



# An access line's status and size, after its request line (gunicorn's access_log_format).
STATUS_AND_SIZE = re.compile(r'" (\d{3}) (\S+) "')


def test_the_access_line_of_an_answer_the_worker_writes_names_the_size_of_the_body_sent(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    # Given the API as production runs it, its access log on
    log_path = tmp_path / "gunicorn.log"
    with serving(make_api(), log_path, WEB_ACCESS_LOG="-") as (api, _):
        # When gunicorn refuses a request whose headers it read (400), and fails one before
        # Django sees it (its 500), each answered in the API's error shape by the worker
        answers = [send_raw(api, TWICE_CONTENT_LENGTH),
                   send_raw(api, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nSCRIPT_NAME: /elsewhere\r\n\r\n")]

    # Then each one's access line names the size of the body its client received (before, 0)
    lines = log_path.read_text().splitlines()
    for answer, body in answers:
        [access] = [line for line in lines if line.endswith(f" request_id={answer.getheader('X-Request-ID')}")
                    and '"GET /healthz HTTP/1.1"' in line]
        found = STATUS_AND_SIZE.search(access)
        assert found and found.groups() == (str(answer.status), str(len(body))), (access, len(body))
        assert len(body) == int(answer.getheader("Content-Length", "")) > 0


def test_a_proxy_not_allowed_is_gunicorns_403_with_a_request_id(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    # Given gunicorn taking the PROXY protocol from another address than the client's
    log_path = tmp_path / "gunicorn.log"
    with serving(make_api(), log_path, GUNICORN_CMD_ARGS="--proxy-protocol v1 --proxy-allow-from 10.9.9.9") as (api, _):
        # When the client sends a PROXY line
        answer, body = send_raw(api, b"PROXY TCP4 192.0.2.1 192.0.2.2 1111 2222\r\n"
                                     b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")

    # Then gunicorn's own 403 page answers it (no code of the list fits it), with an X-Request-ID
    # the log's line for it names
    assert answer.status == 403, body
    request_id = answer.getheader("X-Request-ID", "")
    assert NEW_REQUEST_ID.fullmatch(request_id), answer.getheaders()
    said = [line for line in log_path.read_text().splitlines() if "Invalid request from ip=" in line]
    assert len(said) == 1 and said[0].endswith(f" request_id={request_id}"), said


def test_a_line_its_arguments_do_not_fit_is_logging_s_error_not_the_answer_s(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given gunicorn's error log with the worker's filter, writing to a stream of the test's in
    # the text format
    error_log = logging.getLogger(f"gunicorn.error.{uuid.uuid4().hex}")
    error_log.propagate = False
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.setFormatter(RequestIdEnded("%(message)s"))
    error_log.addHandler(handler)
    error_log.addFilter(RequestIdNamed())

    # When, while the worker answers an error, a line is written whose arguments do not fit its
    # message, then gunicorn's 500 line for a path with a `%` in it
    with answering("0123456789abcdef0123456789abcdef"):
        error_log.error("Error handling request %s %s", "GET")
        error_log.error("Error handling request %s %s", "GET", "/a%s%(x)s")
    error_log.error("After the answer %s", "/b")

    # Then the call returns (before, the filter's formatting raised out of gunicorn's call, and
    # its answer was never sent): logging reports the line it could not format, as without the
    # filter, and writes the next ones, the answer's naming its id, the one after it none
    assert "--- Logging error ---" in capsys.readouterr().err
    assert written.getvalue().splitlines() == [
        "Error handling request GET /a%s%(x)s request_id=0123456789abcdef0123456789abcdef",
        "After the answer /b",
    ]


# A request line holding an ESC and a bare CR (gunicorn's WARNING quotes it), and a request whose
# User-Agent holds bytes gunicorn's parser lets through (read as Latin-1: 0x85 is NEL, a line
# break to Python's splitlines and to log viewers, 0x9b an 8-bit CSI) and whose Referer holds a
# backslash before a quote (its access line quotes both).
FORGED = "FAKE ERROR forged"
FORGING_LINE = b"GET /a\x1b[2J\r" + FORGED.encode() + b" HTTP/1.1\r\nHost: localhost\r\n\r\n"
FORGING_HEADERS = (b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nUser-Agent: ua\x85" + FORGED.encode()
                   + b"\x9b[2J\r\nReferer: r\\\" q=\"z\r\n\r\n")
# A control character written raw: C0 but the line's own LF, DEL, C1 (as the log's UTF-8 writes it).
RAW_CONTROL = re.compile(rb"[\x00-\x09\x0b-\x1f\x7f]|\xc2[\x80-\x9f]")
# An access line's quoted values, a backslash escaping the character after it.
QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_clients_control_characters_in_gunicorns_lines_are_escaped(
    make_api: Callable[..., Api], tmp_path: Path, log_format: str
) -> None:
    # Given the API as production runs it, its access log on
    log_path = tmp_path / "gunicorn.log"
    with serving(make_api(), log_path, LOG_FORMAT=log_format, WEB_ACCESS_LOG="-") as (api, _):
        # When a client sends a request line holding an ESC and a CR, then a request whose
        # User-Agent holds a NEL and an 8-bit CSI and whose Referer a backslash before a quote
        refused, _ = send_raw(api, FORGING_LINE)
        answered, _ = send_raw(api, FORGING_HEADERS)
    assert refused.status == 400 and answered.status == 200

    # Then no control character the client sent is in the log, and no line of it starts with
    # the text that followed one (before, the User-Agent's NEL began a line of the text log)
    log = log_path.read_bytes()
    assert not RAW_CONTROL.search(log), log
    assert not any(line.lstrip().startswith(FORGED) for line in log.decode().splitlines()), log
    if log_format == "json":  # JSON escapes them itself: each line one object still
        lines = _json_lines(log_path)
        [access] = [line["message"] for line in lines if line.get("request_id") == answered.getheader("X-Request-ID")
                    and line["logger"] == "gunicorn.access"]
        assert "ua\x85" + FORGED + "\x9b[2J" in access, access
        return
    # And the text log writes each escaped once, as the application's text lines do: gunicorn's
    # WARNING quotes the request line, the access line the User-Agent and the Referer, whose
    # quoted values read back whole (before, the Referer's ended at its backslash)
    lines = log.decode().splitlines()
    [warning] = [line for line in lines if "Invalid request from ip=" in line]
    assert "'GET /a\\x1b[2J\\r" + FORGED + " HTTP/1.1'" in warning, warning
    [access] = [line for line in lines if line.endswith(f" request_id={answered.getheader('X-Request-ID')}")]
    assert QUOTED.findall(access) == ["GET /healthz HTTP/1.1", 'r\\\\\\" q=\\"z', "ua\\x85" + FORGED + "\\x9b[2J"], access


def test_a_traceback_in_gunicorns_text_lines_is_indented_and_printable() -> None:
    # Given gunicorn's text format
    formatter = RequestIdEnded("[%(levelname)s] %(message)s")

    # When it writes an ERROR whose message and whose exception's message hold a client's line
    # breaks and escape sequences
    try:
        raise ValueError(f"bad\r\n{FORGED}\x1b[2J")
    except ValueError:
        record = logging.LogRecord("gunicorn.error", logging.ERROR, __file__, 1, "Error handling request %s",
                                   (f"/a\\x1b\r\n{FORGED}\x1b[2J",), sys.exc_info())
    written = formatter.format(record)

    # Then no line starts with the forged text (before, both did, and the ESC was written raw):
    # the message is one line, escaped, and the traceback's lines are indented under it, the
    # exception's message's line breaks and ESC escaped or indented too
    lines = written.split("\n")
    # (the four characters `\x1b` it was given written `\\x1b`, as the application's lines write them)
    assert lines[0] == f"[ERROR] Error handling request /a\\\\x1b\\r\\n{FORGED}\\x1b[2J", lines
    assert lines[1] == "    Traceback (most recent call last):", lines
    assert all(line.startswith("    ") for line in lines[1:]), lines
    assert all(line.isprintable() for line in lines), lines
    assert lines[-2:] == ["    ValueError: bad\\r", f"    {FORGED}\\x1b[2J"], lines


@pytest.mark.parametrize("text", ["plain", "a\\x1b b", "\x1b[2J\r\n\t", "\x85\x9b\u2028\u202e", "é 漢字 \\", ""])
@pytest.mark.parametrize("backslashes", [True, False])
def test_gunicorns_printable_text_is_the_applications(text: str, backslashes: bool) -> None:
    # The master imports nothing of `core`: gunicorn_log_format.printable is core/logs.py's, written again
    assert printable(text, backslashes=backslashes) == logs._printable(text, backslashes=backslashes)


# An X-Request-ID that, were it written into a JSON line as it is, would end its string and add a key.
FORGED_REQUEST_ID = 'trace-0123456789", "level": "forged'

# The keys every line of the JSON format has (core/logs.py); a line about an answer has its
# request_id, one with a traceback its exception.
FIELDS = {"timestamp", "level", "logger", "message"}
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def test_under_log_format_json_every_line_gunicorn_writes_is_json_in_the_applications_shape(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    # Given the API as production runs it, logging JSON, gunicorn's own lines from INFO and its
    # access log on the same stream
    log_path = tmp_path / "gunicorn.log"
    with serving(make_api(), log_path, LOG_FORMAT="json", LOG_LEVEL="INFO", WEB_LOG_LEVEL="info",
                 WEB_ACCESS_LOG="-") as (api, _):
        # When a client sends a request gunicorn cannot parse, then one the application answers
        invalid, _ = send_raw(api, MARKER + b"\r\n\r\n")
        healthy = requests.get(api.base_url + "/healthz", timeout=10)
        assert healthy.status_code == 200
        # And one with a well-formed X-Request-ID of its own, one whose X-Request-ID the service
        # refuses (it would close the JSON string and forge a key), and one failing in gunicorn
        # before Django sees it (its 500)
        given = requests.get(api.base_url + "/healthz", headers={"X-Request-ID": "trace-0123456789"}, timeout=10)
        refused = requests.get(api.base_url + "/healthz", headers={"X-Request-ID": FORGED_REQUEST_ID}, timeout=10)
        failed, _ = send_raw(api, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nSCRIPT_NAME: /elsewhere\r\n\r\n")
        # And the worker process is killed (the OOM killer's SIGKILL), and the master boots another
        [worker_pid] = [int(line["message"].rsplit(" ", 1)[1]) for line in _json_lines(log_path)
                        if line["message"].startswith("Booting worker with pid: ")]
        os.kill(worker_pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while sum("Booting worker" in line for line in log_path.read_text().splitlines()) < 2:
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)

    # Then every line of the log is one JSON object (_json_lines parses each), the master's and
    # the workers', gunicorn's and the application's, each with the application's keys and time
    lines = _json_lines(log_path)
    assert all(FIELDS <= set(line) and TIMESTAMP.fullmatch(line["timestamp"]) for line in lines), lines
    gunicorn = [line for line in lines if line["logger"].startswith("gunicorn.")]
    assert all(set(line) <= FIELDS | {"request_id", "exception"} for line in gunicorn), gunicorn
    said = {line["message"]: line for line in gunicorn}
    # Its start, at the level shown
    assert any(message.startswith("Starting gunicorn") for message in said), said
    assert said["Using worker: gunicorn_worker.JsonErrorThreadWorker"]["level"] == "info"
    # Its WARNING for the request it could not parse, its request_id the answer's, as the
    # application's lines carry theirs (not in the message, as the text format writes it)
    [warning] = [line for line in gunicorn if line["message"].startswith("Invalid request from ip=")]
    assert warning["level"] == "warning" and warning["request_id"] == invalid.getheader("X-Request-ID"), warning
    assert "request_id=" not in warning["message"], warning
    # The master's ERROR for the worker killed
    assert said[f"Worker (pid:{worker_pid}) was sent SIGKILL! Perhaps out of memory?"]["level"] == "error"
    # Its access log's line for each answer, naming the answer's X-Request-ID as its request_id,
    # the one the application's line for the same request names: the client's when well-formed,
    # else a new one (the refused value is on no line), gunicorn's own for its 500
    access = [line for line in gunicorn if line["logger"] == "gunicorn.access"]
    assert given.headers["X-Request-ID"] == "trace-0123456789"
    assert NEW_REQUEST_ID.fullmatch(refused.headers["X-Request-ID"]), refused.headers
    for answer in (healthy, given, refused):
        request_id = answer.headers["X-Request-ID"]
        [line] = [line for line in access if line.get("request_id") == request_id]
        assert '"GET /healthz HTTP/1.1" 200 ' in line["message"], line
        application = [line for line in lines if line["logger"] == "core.requests" and line.get("request_id") == request_id]
        assert len(application) == 1, lines
    [line] = [line for line in access if line.get("request_id") == failed.getheader("X-Request-ID")]
    assert '"GET /healthz HTTP/1.1" 500 ' in line["message"], line
    assert all("request_id" in line for line in access), access
    assert "forged" not in log_path.read_text()


def _json_lines(log_path: Path) -> list[dict[str, str]]:
    """Each line of the log, parsed as the JSON object it must be."""
    return [json.loads(line) for line in log_path.read_text().splitlines()]


def test_gunicorns_json_line_has_the_keys_of_the_applications() -> None:
    # Given gunicorn's JSON format, and the application's (core/logs.py, as the settings make it)
    settings = logs.logging_config(level="INFO", json=True)["formatters"]["structured"]
    application = settings["()"](**{key: value for key, value in settings.items() if key != "()"})
    gunicorn = json_formatter()

    # When each writes an ERROR with a traceback about the same request, gunicorn's while its
    # worker answers it (the id its filter gives), the application's within the request
    def error_line(formatter: logging.Formatter, name: str) -> dict[str, str]:
        try:
            raise OSError("gone")
        except OSError:
            record = logging.LogRecord(name, logging.ERROR, __file__, 1, "Error handling request %s", ("/x",),
                                       sys.exc_info())
        RequestIdNamed().filter(record)
        return json.loads(formatter.format(record))

    request_id = "0123456789abcdef0123456789abcdef"
    with answering(request_id):
        from_gunicorn = error_line(gunicorn, "gunicorn.error")
    with logs.bound(request_id=request_id):
        from_application = error_line(application, "core.requests")

    # Then both lines have the same keys, in the same order, and the same values but the logger's
    # name and the time, written alike
    assert list(from_gunicorn) == list(from_application), (from_gunicorn, from_application)
    assert from_gunicorn["request_id"] == request_id and from_gunicorn["level"] == "error"
    assert from_gunicorn["message"] == from_application["message"] == "Error handling request /x"
    assert from_gunicorn["exception"] == from_application["exception"]
    assert TIMESTAMP.fullmatch(from_gunicorn["timestamp"]) and TIMESTAMP.fullmatch(from_application["timestamp"])


# The column every read of a stream selects (jobs/streams.py SENT).
READ_COLUMN = "body"


@contextlib.contextmanager
def column_renamed(table: str, column: str) -> Iterator[None]:
    """`column` of `table` under another name while the block lasts: a release's migration that
    renamed a column the processes still serving read, its reads failing as no outage does."""
    with connection.cursor() as cursor:
        cursor.execute(f'ALTER TABLE {table} RENAME COLUMN "{column}" TO "{column}_gone"')
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'ALTER TABLE {table} RENAME COLUMN "{column}_gone" TO "{column}"')


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_stream_failing_after_its_headers_went_out_is_logged_with_its_request_id(
    make_api: Callable[..., Api], tmp_path: Path, log_format: str
) -> None:
    # Given the API as production runs it, its streams' heartbeat every 0.2 s, and a client's
    # stream of its jobs of a name open, its headers and first line received
    log_path = tmp_path / "gunicorn.log"
    with (serving(make_api(), log_path, LOG_FORMAT=log_format, API_STREAM_HEARTBEAT_SECONDS="0.2") as (api, _),
          api.get("/api/events/", params={"job_name": "echo"}, stream=True) as stream):
        assert stream.status_code == 200, stream.text
        lines = stream.iter_lines()
        assert next(lines).startswith(b"retry:")
        # When its next read fails: the column it reads is gone
        with column_renamed("jobs_jobevent", READ_COLUMN), pytest.raises(requests.RequestException):
            for _ in lines:
                pass

    # Then gunicorn's ERROR for it, the one line of the log, names the stream's X-Request-ID (before,
    # none), and its traceback says of the database's error its first line only, as the
    # application's lines do (core.log_database_errors.DatabaseErrorFirstLine): not the statement it quotes
    request_id = stream.headers["X-Request-ID"]
    assert NEW_REQUEST_ID.fullmatch(request_id), stream.headers
    log = log_path.read_text()
    if log_format == "json":
        [error] = [line for line in _json_lines(log_path) if line["level"] == "error"]
        assert error["message"] == "Error handling request" and error.get("request_id") == request_id, error
        traceback = error["exception"]
    else:
        [error] = [line for line in log.splitlines() if "[ERROR]" in line]
        assert error.endswith(f"[ERROR] Error handling request request_id={request_id}"), log
        traceback = log.split(error, 1)[1]
    last = f"django.db.utils.ProgrammingError: column jobs_jobevent.{READ_COLUMN} does not exist"
    assert traceback.rstrip().endswith(last) and "LINE 1" not in log and "direct cause" not in log, traceback
