"""The page a form post refused by CSRF answers (CSRF_FAILURE_VIEW): Django's own says the same
with an inline <style>, which the pages' Content-Security-Policy (core/csp.py) blocks, so the
operator saw it unstyled and the browser logged a violation. This one is styled by the admin's
own stylesheet, and shows no DEBUG help whatever DEBUG is."""
from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import REASON_NO_CSRF_COOKIE, REASON_NO_REFERER
from django.template.loader import render_to_string


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """403 with Django's reason (such as "CSRF cookie not set." or "Origin checking failed - …
    does not match any trusted origins.") and what an operator can do about it."""
    body = render_to_string("csrf_failure.html", {
        "reason": reason, "no_cookie": reason == REASON_NO_CSRF_COOKIE, "no_referer": reason == REASON_NO_REFERER,
    })
    return HttpResponse(body, status=403)
