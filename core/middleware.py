"""The service's own middleware: HEAD answered without a body, the body size limit, the URL
guard, ids in paths in either case, the trailing slash's redirect, Django's user and message middleware for the staff's pages
only (the admin and the operators' console), and the 503 of a page the database or the disk could
not serve."""
from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import unquote_to_bytes

from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponsePermanentRedirect,
    JsonResponse,
)
from django.middleware import common
from django.utils.deprecation import MiddlewareMixin
from django.utils.http import escape_leading_slashes

from core.errors import error_body, outage_logged, outage_of
from core.outage_page import outage_answer
from core.request_body import BODY_UNREAD, TIMED_OUT

# Where core/urls.py mounts the admin, and the console (behind the admin's login): the only
# pages with sessions, Django users and messages.
ADMIN_PATH_PREFIX = "/admin/"
STAFF_PATH_PREFIXES = (ADMIN_PATH_PREFIX, "/console/")


class BodySizeLimitMiddleware:
    """Refuses oversized bodies before anything reads them, and bodies that could not be read
    before the request took its turn (core/request_body.py), in the service's error shape.

    On every path, the admin's too: Django refuses its urlencoded forms over the same limit
    (DATA_UPLOAD_MAX_MEMORY_SIZE) anyway, and a multipart body it would read as it comes, file
    parts and all, inside the request's turn (the CSRF check reads the form), however slowly
    the client sends it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        meta = request.META
        if BODY_UNREAD in meta:
            if meta[BODY_UNREAD] == TIMED_OUT:
                seconds = settings.WEB_BODY_READ_SECONDS
                return JsonResponse(
                    error_body("request_timeout", f"The request body did not arrive within {seconds:g} seconds."),
                    status=408,
                )
            return JsonResponse(error_body("bad_request", "The request body could not be read."), status=400)
        try:
            length = int(meta.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return JsonResponse(error_body("bad_request", "Invalid Content-Length."), status=400)
        limit = settings.API_MAX_BODY_BYTES
        if length > limit:
            return JsonResponse(
                error_body("payload_too_large", f"The request body is larger than {limit} bytes."),
                status=413,
            )
        return self.get_response(request)


# The URL guard's answers (`%00` or bytes not UTF-8 in a query string; too many parameters; `%00`
# in a path); the spec's examples of them.
QUERY_NOT_UTF8_MESSAGE = "The query string must be UTF-8 without the character U+0000."
TOO_MANY_PARAMETERS_MESSAGE = "The query string must have at most {most} parameters."
PATH_NUL_MESSAGE = "The path must not contain the character U+0000."


def _query_string_valid(query: str) -> bool:
    # The bytes Django decodes: WSGI hands them over as ISO-8859-1.
    raw = unquote_to_bytes(query.encode("iso-8859-1", errors="replace"))
    if b"\x00" in raw:
        return False
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class UrlGuardMiddleware:
    """Refuses, in the service's error shape, a query string that is not UTF-8, holds U+0000 or
    has more parameters than Django parses (DATA_UPLOAD_MAX_NUMBER_FIELDS), and a path holding
    U+0000: the one check for every query parameter of every view (filters, cursors, ids, the
    admin's search).

    PostgreSQL cannot store or compare U+0000 (psycopg refuses the query: a 500), and Django
    would silently turn bytes that are not UTF-8 into U+FFFD, matching nothing. Past its count
    of parameters Django raises TooManyFieldsSent wherever a view first reads them: every API
    view (DRF's content negotiation, before authentication) answered anyone 500 with an ERROR
    and its traceback, counted as the service's own failure, and the admin's login an ERROR with
    its traceback, as many a second as were sent.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        query = request.META.get("QUERY_STRING")
        if query and not _query_string_valid(query):
            return JsonResponse(error_body("invalid_query", QUERY_NOT_UTF8_MESSAGE), status=400)
        most = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
        # Counted as Django's parser counts them (urllib's parse_qsl: one more than the `&`).
        if query and most is not None and query.count("&") + 1 > most:
            return JsonResponse(
                error_body("invalid_query", TOO_MANY_PARAMETERS_MESSAGE.format(most=most)),
                status=400,
            )
        if "\x00" in request.path_info:
            return JsonResponse(
                error_body("invalid_path", PATH_NUL_MESSAGE),
                status=400,
            )
        return self.get_response(request)


# A path segment that is a UUID with a capital letter in it.
_UPPERCASE_UUID_SEGMENT = re.compile(
    r"(?<=/)(?=[0-9a-f-]*[A-F])[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(?=/|\Z)"
)


class UuidPathMiddleware:
    """An API path's ids are UUIDs in either case, as RFC 9562 reads them and as the query
    strings' ids (`?job_id=`, `?job=`) and the bodies' are: Django's `uuid` path converter takes
    lowercase alone, so a client that writes UUIDs in capitals (Swift's `UUID.uuidString`) got
    404 for its own job. The path is resolved with them in lowercase; the routes (the metrics'
    and logs' `route`) stay as they are."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info.startswith("/api/"):
            request.path_info = _UPPERCASE_UUID_SEGMENT.sub(lambda match: match.group().lower(), request.path_info)
        return self.get_response(request)


class HeadWithoutBodyMiddleware:
    """Answers HEAD with what GET would (its status and headers, Content-Length among them) and
    no body, as RFC 9110 (9.3.2) has it: Django's views write the body, and gunicorn, which drops
    it, logged a WARNING for each such answer ("WSGI app sent body bytes on a no-body
    response"): every HEAD of an uptime check, and any number of them from anyone, without a key.
    A streaming answer goes without its body too (the event streams answer HEAD with their
    headers alone and open no stream, jobs/stream_api.py)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if request.method != "HEAD":
            return response
        if response.streaming:
            # Its own close stays with the response, which the server closes once it has answered.
            response.streaming_content = iter(())
        else:
            response.content = b""
        return response


_METHODS_WITH_A_BODY = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class CommonMiddleware(common.CommonMiddleware):
    """Django's, but a request with a body (POST, PUT, PATCH, DELETE) to a path missing its
    trailing slash is sent on with 308, which keeps the method and the body (RFC 7538). Django
    answers it 301, which clients repeat as a GET: `POST /api/jobs` listed the client's jobs,
    200, and submitted nothing. With DEBUG on, Django raises instead (a 500)."""

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if request.method in _METHODS_WITH_A_BODY and response.status_code == 404 and self.should_redirect_with_slash(request):
            slashed = escape_leading_slashes(request.get_full_path(force_append_slash=True))
            return HttpResponsePermanentRedirect(slashed, status=308)
        return super().process_response(request, response)


class _AdminOnly(MiddlewareMixin):
    """Runs the middleware it is mixed into for the staff's paths only.

    The API authenticates with API keys and never reads a Django user or a message, yet these
    two cost more CPU on every poll and submit than the other seven classes together
    (docs/benchmarks.md, "Fixes"). Subclasses, not a wrapper, so the admin's
    system checks (admin.E408, admin.E409) still find them in MIDDLEWARE.
    """

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info.startswith(STAFF_PATH_PREFIXES):
            return super().__call__(request)
        return self.get_response(request)


class AdminAuthenticationMiddleware(_AdminOnly, AuthenticationMiddleware):
    pass


class AdminMessageMiddleware(_AdminOnly, MessageMiddleware):
    pass


class OutageMiddleware:
    """A page that is not the API's (the console, the admin) answers 503 when the database is out
    of reach or the disk full, as the API's views do (core/errors.py `outage_of`), rather than 500.
    The console and the admin first read the operator's session and user from the database, so
    with PostgreSQL down they never reach a view that could say so: the operator saw "Internal
    server error." and the log a traceback a request. Nothing of the page is shown: the answer
    says only what /readyz tells anyone. A staff page opened in a browser answers it as a page
    (core/outage_page.py), every other request as JSON."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        down = outage_of(exception)
        if down is None:
            return None  # Django's handler500
        message = down.page_message or down.message
        if request.path_info.startswith(STAFF_PATH_PREFIXES):
            response = outage_answer(request, code=down.code, message=message, retry_after=down.retry_after)
        else:
            response = JsonResponse(error_body(down.code, message), status=503,
                                    headers={"Retry-After": str(down.retry_after)})
        outage_logged(down, exception, response=response, request=request)
        return response
