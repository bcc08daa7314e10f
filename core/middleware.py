"""Refuses oversized bodies before anything reads them, in the service's error shape."""
from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from core.errors import error_body


class BodySizeLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return JsonResponse(error_body("bad_request", "Invalid Content-Length."), status=400)
        limit = settings.API_MAX_BODY_BYTES
        if length > limit and not request.path.startswith("/admin/"):
            return JsonResponse(
                error_body("payload_too_large", f"The request body is larger than {limit} bytes."),
                status=413,
            )
        return self.get_response(request)
