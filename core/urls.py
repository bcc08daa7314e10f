"""Root URLs: the API, health checks, the OpenAPI docs, the admin, and the operators' console
and metrics."""
from django.contrib import admin
from django.urls import include, path

from core import health

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("api/", include("jobs.urls")),
    path("api/", include("webhooks.urls")),
    path("api/", include("openapi.urls")),
    path("admin/", admin.site.urls),
    path("", include("console.urls")),
]

handler400 = "core.errors.handler400"
handler403 = "core.errors.handler403"
handler404 = "core.errors.handler404"
handler500 = "core.errors.handler500"
