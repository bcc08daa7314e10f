"""The list of error codes (core/error_codes.py) is the codes the service answers, each with its
status: read off the source (every ApplicationError raised, every `error_body` answered, the
DRF exceptions and outages core/errors.py maps), off the one exception handler, and over HTTP;
and the docs and the spec show it."""
from __future__ import annotations

import ast
import errno
import importlib
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404
from django.test import Client as BrowserClient
from rest_framework import exceptions

from core import errors
from core.error_codes import ERROR_CODES, error_codes_markdown
from gunicorn_worker import PARSE_ERRORS, SERVER_ERROR
from tests.conftest import REPO, Api

# Where the service answers from (the tests, migrations and the spec's wiring answer nothing).
PACKAGES = ("core", "jobs", "webhooks", "console")

# A code found in the source, with its status when the source says it (None when it is worked
# out at run time: the handler's tests below check those), and where.
Found = tuple[str, int | None, str]


def _modules() -> Iterator[tuple[Any, ast.Module, str]]:
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            yield importlib.import_module(name), ast.parse(path.read_text()), str(path.relative_to(REPO))


def _named(module: Any, node: ast.expr) -> Any:
    """What the name `node` calls stands for in `module` (None if not a plain or dotted name)."""
    if isinstance(node, ast.Name):
        return getattr(module, node.id, None)
    if isinstance(node, ast.Attribute):
        return getattr(_named(module, node.value), node.attr, None)
    return None


def _literal(node: ast.expr | None) -> Any:
    return node.value if isinstance(node, ast.Constant) else None


def _application_error(module: Any, call: ast.Call, where: str) -> Found | None:
    """An ApplicationError made here: its code and status, given or its class's."""
    made = _named(module, call.func)
    if not (isinstance(made, type) and issubclass(made, errors.ApplicationError)):
        return None
    given = {keyword.arg: keyword.value for keyword in call.keywords}
    code = _literal(given["code"]) if "code" in given else made.code
    assert isinstance(code, str), f"{where}: give the error's code as a literal, for the list to be checked"
    status = _literal(given["status_code"]) if "status_code" in given else made.status_code
    return code, status, where


def _answered(tree: ast.Module, where: str) -> Iterator[Found]:
    """Each `error_body("<code>", ...)`, with the status of the answer it is the body of
    (`JsonResponse(error_body(...), status=<status>)`)."""
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
    statuses = {
        id(call.args[0]): _literal(keyword.value)
        for call in calls if call.args for keyword in call.keywords if keyword.arg == "status"
    }
    for call in calls:
        if isinstance(call.func, ast.Name) and call.func.id == "error_body" and isinstance(_literal(call.args[0]), str):
            yield call.args[0].value, statuses.get(id(call)), f"{where}:{call.lineno}"


def _assigned(tree: ast.Module, where: str) -> Iterator[Found]:
    """The exception handler's own codes: a literal assigned to `code` in a function, alone or in
    a tuple (`code, message, details, status_code = "not_found", "Not found.", None, 404`), with
    the `status_code` assigned alongside if it is."""
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef):
            continue
        for assign in ast.walk(function):
            if not isinstance(assign, ast.Assign) or len(assign.targets) != 1:
                continue
            target, value = assign.targets[0], assign.value
            pairs = (
                zip(target.elts, value.elts, strict=False)
                if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple)
                else [(target, value)]
            )
            assigned = {getattr(name, "id", None): _literal(node) for name, node in pairs}
            if isinstance(assigned.get("code"), str):
                yield assigned["code"], assigned.get("status_code"), f"{where}:{assign.lineno}"


def codes_in_the_source() -> list[Found]:
    found: list[Found] = []
    for module, tree, where in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and (made := _application_error(module, node, f"{where}:{node.lineno}")):
                found.append(made)
        found.extend(_answered(tree, where))
        found.extend(_assigned(tree, where))
    # What core/errors.py maps DRF's exceptions to (DRF raises most of them itself), and its outages.
    found += [(code, exc.status_code, "core/errors.py _DRF_CODES") for exc, code in errors._DRF_CODES.items()]
    found += [(down.code, 503, "core/errors.py OUTAGES") for down in errors.OUTAGES]
    # What the API's gunicorn worker answers a request it cannot parse with (it cannot import the list).
    found += [(code, status, "gunicorn_worker.py PARSE_ERRORS") for status, (code, _) in PARSE_ERRORS.items()]
    found.append((SERVER_ERROR[0], 500, "gunicorn_worker.py SERVER_ERROR"))
    return found


def test_every_code_the_source_answers_is_listed_with_its_status() -> None:
    found = codes_in_the_source()
    # The scan finds each way a code is given: raised, answered by middleware, mapped, an outage.
    assert {code for code, _, _ in found} >= {"invalid_cursor", "invalid_query", "not_acceptable", "storage_full"}

    unlisted = sorted({f"{code} ({where})" for code, _, where in found if code not in ERROR_CODES})
    assert unlisted == [], f"Add to core/error_codes.py: {', '.join(unlisted)}"
    other_status = sorted(
        f"{code}: {status} at {where}, {ERROR_CODES[code].status} listed"
        for code, status, where in found
        if status is not None and status != ERROR_CODES[code].status
    )
    assert other_status == [], "; ".join(other_status)


def test_the_list_holds_no_code_nothing_answers() -> None:
    answered = {code for code, _, _ in codes_in_the_source()}

    unanswered = sorted(set(ERROR_CODES) - answered)
    assert unanswered == [], f"Listed in core/error_codes.py, answered nowhere: {', '.join(unanswered)}"


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.ApplicationError("Bad.", code="invalid_header"), "invalid_header"),
        (RequestDataTooBig(), "payload_too_large"),
        (Http404(), "not_found"),
        (PermissionDenied(), "permission_denied"),
        (exceptions.ValidationError({"url": ["Bad."]}), "invalid"),
        (exceptions.ParseError(), "malformed_json"),
        (exceptions.NotAuthenticated(), "not_authenticated"),
        (exceptions.AuthenticationFailed(), "authentication_failed"),
        (exceptions.NotFound(), "not_found"),
        (exceptions.MethodNotAllowed("DELETE"), "method_not_allowed"),
        (exceptions.NotAcceptable(), "not_acceptable"),
        (exceptions.UnsupportedMediaType("text/plain"), "unsupported_media_type"),
        (exceptions.Throttled(wait=3), "rate_limited"),
        (errors.FailedAuthenticationsThrottled(wait=3), "too_many_failed_authentications"),
        (OSError(errno.ENOSPC, "No space left on device"), "storage_full"),
        (RuntimeError("a bug"), "server_error"),
    ],
    ids=lambda value: value if isinstance(value, str) else type(value).__name__,
)
@pytest.mark.django_db
def test_the_handler_answers_each_error_with_its_listed_status(exc: Exception, code: str) -> None:
    response = errors.exception_handler(exc, {"view": None, "request": None})

    assert response is not None
    assert (response.data["error"]["code"], response.status_code) == (code, ERROR_CODES[code].status)


@pytest.mark.parametrize(
    ("method", "path", "headers", "code"),
    [
        ("GET", "/api/jobs/", {"Accept": "text/html"}, "not_acceptable"),
        ("GET", "/api/job/", {}, "missing_parameter"),
        ("DELETE", "/api/jobs/", {}, "method_not_allowed"),
        ("GET", "/api/jobs/", {"Host": "elsewhere.example"}, "bad_request"),
        ("GET", "/api/nothing-here/", {}, "not_found"),
    ],
)
def test_codes_come_back_over_http_with_their_listed_status(
    make_api: Any, method: str, path: str, headers: dict[str, str], code: str
) -> None:
    api: Api = make_api()

    response = api.request(method, path, headers=headers)

    assert response.headers["Content-Type"] == "application/json"
    assert (response.json()["error"]["code"], response.status_code) == (code, ERROR_CODES[code].status)
    if code == "method_not_allowed":
        assert "POST" in response.headers["Allow"]  # as the list says


@pytest.mark.django_db
def test_a_staff_page_refused_answers_permission_denied() -> None:
    browser = BrowserClient()
    browser.force_login(User.objects.create_user("clerk", is_staff=True))  # staff, no permission

    response = browser.get("/console/")

    assert (response.json()["error"]["code"], response.status_code) == (
        "permission_denied", ERROR_CODES["permission_denied"].status
    )


def test_docs_api_md_shows_the_list() -> None:
    table = error_codes_markdown()

    assert table in (REPO / "docs" / "api.md").read_text(), f"docs/api.md's Error codes table should read:\n{table}"


def committed_spec() -> dict[str, Any]:
    return yaml.safe_load((REPO / "openapi" / "schema.yaml").read_text())


def test_the_spec_shows_the_list_and_keeps_code_a_string() -> None:
    spec = committed_spec()
    code = spec["components"]["schemas"]["ErrorDetail"]["properties"]["code"]

    assert error_codes_markdown() in spec["info"]["description"]
    assert code["type"] == "string" and "enum" not in code
    assert all(f"`{listed}` ({error.status})" in code["description"] for listed, error in ERROR_CODES.items())


def test_the_list_renders_as_a_table() -> None:
    # A `|` would end a cell early in the Markdown table.
    assert all("|" not in error.when + error.then for error in ERROR_CODES.values())


def test_the_spec_names_each_code_under_its_listed_status() -> None:
    # The operations' error answers, described and exemplified by hand (openapi/schemas.py and
    # openapi/operations/): a code they name is a listed one, under its status.
    misplaced = set()
    for path, item in committed_spec()["paths"].items():
        for method, operation in item.items():
            for status, answer in operation["responses"].items():
                if int(status) < 400:
                    continue
                named = set(re.findall(r"`([a-z_]+)`", answer["description"])) & set(ERROR_CODES)
                examples = answer.get("content", {}).get("application/json", {}).get("examples", {})
                named |= {example["value"]["error"]["code"] for example in examples.values()}
                misplaced |= {
                    f"{method.upper()} {path} {status}: {code}"
                    for code in named
                    if code not in ERROR_CODES or ERROR_CODES[code].status != int(status)
                }

    assert sorted(misplaced) == [], "; ".join(sorted(misplaced))
