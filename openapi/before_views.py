"""The answers every operation can get before any view: the server's (gunicorn) to a request it
cannot parse, the URL guard's (core/middleware.py) to a query string or a path it refuses, and
Django's to a path whose id no route takes."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from gunicorn.config import Config

from core.error_codes import ERROR_CODES
from core.errors import NO_ROUTE_MESSAGE, error_body
from core.middleware import (
    PATH_NUL_MESSAGE,
    QUERY_NOT_UTF8_MESSAGE,
    TOO_MANY_PARAMETERS_MESSAGE,
)
from gunicorn_worker import PARSE_ERRORS

ERROR_REF = {"$ref": "#/components/schemas/Error"}


def _example_name(code: str) -> str:
    return "".join(word.capitalize() for word in code.split("_"))


def _before_any_view(code: str, messages: dict[str, str], where: str, when: str | None = None) -> dict[str, Any]:
    """An answer given on any path before any view (no rate limit header: no view ran): the API's
    error schema, an example of each of `messages` (by example name), its description `when` (by
    default the code's, core/error_codes.py) and what to do, then `where`."""
    listed = ERROR_CODES[code]
    return {
        "content": {"application/json": {"schema": ERROR_REF, "examples": {
            name: {"value": error_body(code, message), "summary": code} for name, message in messages.items()
        }}},
        "description": f"{when or listed.when} {listed.then} {where} Code: `{code}`.",
    }


def _unparsable(status: int) -> dict[str, Any]:
    """gunicorn's answer of `status` (gunicorn_worker.py) to a request it cannot parse, its example
    the very message gunicorn_worker writes with gunicorn's limits (gunicorn.conf.py keeps its
    defaults)."""
    code, message = PARSE_ERRORS[status]
    limits = Config()
    return _before_any_view(code, {_example_name(code): message.format(
        limit_request_line=limits.limit_request_line, limit_request_fields=limits.limit_request_fields,
        limit_request_field_size=limits.limit_request_field_size)},
        "Answered by the server before the request reaches the API, the connection then closed.")


# Answered by the server (gunicorn) to a request on any path, before any view: every operation's.
UNPARSABLE = {str(status): _unparsable(status) for status in sorted(PARSE_ERRORS)}
# The URL guard's answers on any path, before any view: to a query string, every operation's; to
# `%00` in a path, the operations whose path takes an id (the others' paths cannot hold one).
REFUSED_QUERY = {"400": _before_any_view("invalid_query", {
    "InvalidQuery": QUERY_NOT_UTF8_MESSAGE,
    "TooManyQueryParameters": TOO_MANY_PARAMETERS_MESSAGE.format(most=settings.DATA_UPLOAD_MAX_NUMBER_FIELDS),
}, "Answered on any path, before any view.")}
REFUSED_PATH = {"400": _before_any_view("invalid_path", {"InvalidPath": PATH_NUL_MESSAGE},
                                        "Answered on any path, before any view.")}
# Django's 404 (core/errors.py handler404) to a path no route matches, on the operations whose path
# takes an id: an id not of its type is not the operation's path at all.
NO_ROUTE = {"404": _before_any_view("not_found", {"NoRoute": NO_ROUTE_MESSAGE}, "Answered before any view.",
                                    when="An id that is not of its type (not a UUID; a result's, not a whole "
                                    "number) matches no path.")}


def with_answers_before_views(responses: dict[str, Any], *, path_takes_ids: bool) -> dict[str, Any]:
    """`responses` with REFUSED_QUERY, REFUSED_PATH and NO_ROUTE where the path takes ids, and the
    server's UNPARSABLE answers, in order of status as drf-spectacular writes the others. Where the
    view documents the status itself (a 400 of its own: a field, a filter, a cursor; its 404), that
    answer is kept, its headers too, and each of these becomes one more of its examples, its
    description said after the view's."""
    merged = dict(responses)
    refused = [*REFUSED_QUERY.items(), *([*REFUSED_PATH.items(), *NO_ROUTE.items()] if path_takes_ids else [])]
    for status, server_answer in [*refused, *UNPARSABLE.items()]:
        documented = merged.get(status)
        if documented is None:
            merged[status] = server_answer
            continue
        content = documented["content"]["application/json"]
        server_content = server_answer["content"]["application/json"]
        merged[status] = {
            **documented,
            "content": {**documented["content"], "application/json": {
                **content, "examples": {**content["examples"], **server_content["examples"]},
            }},
            "description": f"{documented['description']} Or: {server_answer['description']}",
        }
    return dict(sorted(merged.items()))
