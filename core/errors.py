"""One error hierarchy and one JSON error shape for every error the service answers.

The shape: `{"error": {"code": "<machine code>", "message": "<sentence>", "details": <obj|null>}}`.
"""
from __future__ import annotations

import errno
import logging
import sqlite3
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.db import InterfaceError, OperationalError, connection
from django.http import Http404, HttpRequest, HttpResponseBase, JsonResponse
from django.utils.log import log_response
from rest_framework import exceptions, status
from rest_framework.response import Response

from core.db import LOCK_NOT_AVAILABLE, QUERY_CANCELED, sqlstate
from core.log_database_errors import first_line
from core.ratelimit import ceiling_seconds

logger = logging.getLogger(__name__)
# Its lines are let through once a minute (core/logs.py): every client's request meets the same lock.
_busy_logger = logging.getLogger(f"{__name__}.database_busy")
# Once a minute too: a read too large for the bound is so at every retry, of every client asking it.
_long_logger = logging.getLogger(f"{__name__}.database_long")


class ApplicationError(Exception):
    """A failure the client can act on: a machine code, a sentence and optional details."""

    status_code = status.HTTP_400_BAD_REQUEST
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: Any = None,
        status_code: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code


class NotFound(ApplicationError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"


class Conflict(ApplicationError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"


class Unprocessable(ApplicationError):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    code = "unprocessable"


class TooManyRequests(ApplicationError):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    code = "rate_limited"


class FailedAuthenticationsThrottled(exceptions.Throttled):
    """Too many failed API key checks from the request's address (core/auth.py): refused before
    its key is looked up. DRF's exception, as the authenticator's other refusals are, so that DRF
    knows the request unauthenticated."""


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def database_unreachable(exc: BaseException) -> bool:
    """Whether `exc` is the database out of reach (PostgreSQL refused or never answered the
    connection, or the connection broke under the query) rather than an error of the query itself
    (a deadlock, a statement timeout), after which the connection still serves."""
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    raw = connection.connection  # None: it could not connect
    # psycopg2's `closed` is nonzero once the connection is lost (SQLite's has no such state).
    return raw is None or bool(getattr(raw, "closed", 0))


def database_busy(exc: BaseException) -> bool:
    """Whether `exc` is a statement that waited for a lock longer than its bound (an API
    process's API_DB_LOCK_TIMEOUT_SECONDS): a table locked by a migration's ALTER TABLE, a LOCK
    TABLE, a TRUNCATE. The connection still serves."""
    return isinstance(exc, OperationalError) and sqlstate(exc) == LOCK_NOT_AVAILABLE


def database_long(exc: BaseException) -> bool:
    """Whether `exc` is a statement PostgreSQL ended for running longer than its bound (an API
    process's API_DB_STATEMENT_TIMEOUT_SECONDS), or an operator's pg_cancel_backend. The
    connection still serves."""
    return isinstance(exc, OperationalError) and sqlstate(exc) == QUERY_CANCELED


def storage_full(exc: BaseException) -> bool:
    """Whether `exc`, or the error it was raised from (Django's database errors wrap the
    driver's), is a full disk: ENOSPC or EDQUOT from a write, SQLITE_FULL from SQLite (embedded
    mode: `make run`'s SQLite file, its file cache and broker). Any other OSError stays the
    server's error that it is."""
    for error in (exc, exc.__cause__):
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(error, sqlite3.Error) and getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return True
    return False


@dataclass(frozen=True)
class Outage:
    """A request the service could not serve for a dependency's outage: 503 rather than 500, for
    clients to retry after `retry_after` seconds and for an operator (the console, the admin) to
    read what is wrong."""

    code: str
    message: str
    retry_after: int
    logged_as: str
    log: logging.Logger = logger
    # What the staff's pages say, where the API's message names what only its clients can change.
    page_message: str = ""


_OUTAGES = (
    (database_unreachable, Outage("database_unavailable", "The database is unreachable; retry later.", 5,
                                  "Database unreachable")),
    (database_busy, Outage("database_busy", "A table this request needs is locked (a migration, a maintenance); "
                           "retry later.", 5, "Database busy: gave up waiting for a lock", _busy_logger)),
    (database_long, Outage("database_busy", "The database took longer than it may on this request (a page of "
                           "many large values, a filter matching many rows); retry later, or ask for less: a "
                           "smaller page_size, a narrower filter.", 5,
                           "Database busy: a statement ran past API_DB_STATEMENT_TIMEOUT_SECONDS", _long_logger,
                           "The database took longer than it may on this page (a list of many rows, a search "
                           "or filter matching many); retry later, or narrow the list: a search, a filter.")),
    # Freeing a disk takes an operator, not seconds.
    (storage_full, Outage("storage_full", "The service's storage is full; retry later.", 30, "Storage full")),
)
# What the spec documents as every operation's 503 (openapi/schemas.py), from the same table:
# one example a code (a lock wait's and a long statement's are both `database_busy`).
_first_of_code: dict[str, Outage] = {}
for _, _found in _OUTAGES:
    _first_of_code.setdefault(_found.code, _found)
OUTAGES = tuple(_first_of_code.values())


def outage_of(exc: BaseException) -> Outage | None:
    """The outage `exc` tells, if any."""
    return next((found for tells, found in _OUTAGES if tells(exc)), None)


def outage_logged(
    down: Outage, exc: BaseException, *, response: HttpResponseBase, request: HttpRequest | None
) -> None:
    """`exc`'s outage, answered by `response`, logged as one WARNING line with the request's id
    (as every line) rather than the traceback of an unhandled error. log_response (Django's own)
    marks the answer logged: Django's ERROR "Service Unavailable: <path>" for it was a second line
    a request, at the rate clients retried."""
    log_response("%s, answered 503: %s", down.logged_as, first_line(exc), response=response, request=request,
                 logger=down.log, level="warning")


# DRF's own exceptions, mapped to our codes and sentences.
_DRF_CODES: dict[type[exceptions.APIException], str] = {
    exceptions.ParseError: "malformed_json",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "rate_limited",
    FailedAuthenticationsThrottled: "too_many_failed_authentications",
}
_THROTTLED_MESSAGES: dict[type[exceptions.Throttled], str] = {
    FailedAuthenticationsThrottled: "Too many failed authentications from your address; retry later.",
}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's EXCEPTION_HANDLER: every error, the same shape; never an exception text on 500."""
    from rest_framework.views import set_rollback  # not at import: DRF's settings import us

    headers: dict[str, str] = {}
    down: Outage | None = None
    if isinstance(exc, ApplicationError):
        code, message, details, status_code = exc.code, exc.message, exc.details, exc.status_code
        headers.update(exc.headers)
    elif isinstance(exc, RequestDataTooBig):
        code, message, details = "payload_too_large", "The request body is too large.", None
        status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    elif isinstance(exc, Http404):
        code, message, details, status_code = "not_found", "Not found.", None, 404
    elif isinstance(exc, PermissionDenied):
        code, message, details, status_code = "permission_denied", "Permission denied.", None, 403
    elif isinstance(exc, exceptions.ValidationError):
        code, message = "invalid", "The request is invalid; see details."
        details, status_code = exc.detail, exc.status_code
    elif isinstance(exc, exceptions.APIException):
        code = _DRF_CODES.get(type(exc), exc.default_code)
        message, details, status_code = str(exc.detail), None, exc.status_code
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            message = _THROTTLED_MESSAGES.get(type(exc), "Too many requests; retry later.")
            details = {"retry_after_seconds": ceiling_seconds(exc.wait)}
        auth_header = getattr(exc, "auth_header", None)
        if auth_header:
            headers["WWW-Authenticate"] = auth_header
        if getattr(exc, "wait", None) is not None:
            headers["Retry-After"] = str(ceiling_seconds(exc.wait))
    elif (down := outage_of(exc)) is not None:
        code, message, details, status_code = down.code, down.message, None, 503
        headers["Retry-After"] = str(down.retry_after)
    else:
        logger.exception("Unhandled error in %s", context.get("view"))
        code, message, details, status_code = "server_error", "Internal server error.", None, 500
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        view = context.get("view")
        request = context.get("request")
        if view is not None and request is not None:
            www = view.get_authenticate_header(request)
            if www:
                headers["WWW-Authenticate"] = www
            status_code = 401
    set_rollback()
    response = Response(error_body(code, message, details), status=status_code, headers=headers)
    if down is not None:
        outage_logged(down, exc, response=response, request=context.get("request"))
    return response


# Django's own handlers (URLs no view matched, errors outside DRF), in the same shape.
def handler400(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(error_body("bad_request", "Bad request."), status=400)


def handler403(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(error_body("permission_denied", "Permission denied."), status=403)


# The answer to a path no route matches (an id in it not of its type, as `/api/jobs/42/`); the
# spec's example of it.
NO_ROUTE_MESSAGE = "Not found."


def handler404(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(error_body("not_found", NO_ROUTE_MESSAGE), status=404)


def handler500(request: HttpRequest) -> JsonResponse:
    return JsonResponse(error_body("server_error", "Internal server error."), status=500)
