"""The admin site: Django's, with its login throttled per client address."""
from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse

from core.ratelimit import ceiling_seconds
from core.throttling import AdminLoginRateThrottle


class AdminSite(admin.AdminSite):
    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        throttle = AdminLoginRateThrottle()
        if not throttle.allow_request(request, None):
            wait = ceiling_seconds(throttle.wait() or 0)
            response = HttpResponse(
                f"Too many login attempts from your address; try again in {wait} s.",
                status=429,
                content_type="text/plain; charset=utf-8",
            )
            response["Retry-After"] = str(wait)
            return response
        return super().login(request, extra_context)
