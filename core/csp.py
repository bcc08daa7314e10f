"""Content-Security-Policy: the policy of every HTML page the service serves (the admin, the
console, Django's own error pages), set by a middleware, and the docs pages' own, looser one.

The admin and the console show strings that any client with an API key chose (payloads, results,
error messages, callback and endpoint URLs, descriptions, receivers' answers) to staff whose
session may cancel jobs, revoke keys and delete clients. Django's autoescaping keeps them text;
the policy is what stands if a template ever fails to: a script or inline handler that is not one
of the service's own files does not run, nothing is loaded from or sent to another origin, and no
other site frames the page. Every asset of these pages is served by the service itself (no CDN:
it runs on networks with no internet).

Why not django-csp: its middleware builds its policy twice for every answer (enforced and
report-only), the API's JSON answers too, whose paths it excludes only after building them: it
added 33 µs to a request, this one 1.3 µs (a bare JSON answer, on this machine), on every submit
and poll. Django 6.0's own CSP middleware takes this one's place when the project moves to it."""
from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse

HEADER = "Content-Security-Policy"

# What every directive below leaves out, whatever the page: plugins, a <base> that moves relative
# URLs elsewhere, and framing by any site (X-Frame-Options: DENY says the same to old browsers).
_ALWAYS = "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"

# The admin's and the console's: their scripts and styles are files of the service's apps, with
# no inline script, handler or style (Django 5.2's admin has none, console/templates neither:
# tests/core/test_admin_browser.py and tests/console/test_console_browser.py hold them to it).
# `data:` images: the console's empty icon (`<link rel="icon" href="data:,">`).
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    f"connect-src 'self'; form-action 'self'; {_ALWAYS}"
)

# Swagger UI: drf-spectacular's page starts it with an inline script and styles the page inline;
# React sets inline styles too.
SWAGGER_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    f"img-src 'self' data:; font-src 'self' data:; connect-src 'self'; {_ALWAYS}"
)
# Redoc: as Swagger UI, and its search runs in a worker it starts from a blob: URL. Its sidebar
# links a logo from its CDN, which the browser then never requests (Redoc hides the image).
REDOC_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' blob:; worker-src 'self' blob:; "
    f"style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; {_ALWAYS}"
)


class ContentSecurityPolicyMiddleware:
    """Sets PAGE_POLICY on every HTML answer that has no policy of its own (the docs pages set
    theirs, `policy_of`). The API's JSON answers get none: a browser renders no JSON as a page."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if HEADER not in response and response.get("Content-Type", "").startswith("text/html"):
            response[HEADER] = PAGE_POLICY
        return response


def policy_of(view: Callable[..., HttpResponse], policy: str) -> Callable[..., HttpResponse]:
    """`view`, its answers sent with `policy` in place of PAGE_POLICY."""

    @wraps(view)
    def with_policy(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = view(request, *args, **kwargs)
        response[HEADER] = policy
        return response

    return with_policy
