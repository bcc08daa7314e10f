"""The OpenAPI schema and the docs pages that render it (assets served locally)."""
from django.http import HttpRequest, HttpResponse
from django.urls import path
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularRedocView, SpectacularSwaggerView

# Registers the schema extensions that annotate the API's views from outside them.
import openapi.extensions  # noqa: F401
from core.csp import REDOC_POLICY, SWAGGER_POLICY, policy_of
from openapi.views import SchemaApi


class SwaggerView(SpectacularSwaggerView):
    """drf-spectacular's, with Django's Cross-Origin-Opener-Policy (same-origin, every other page's)
    in place of its `unsafe-none`, which serves Swagger UI's OAuth popups: this API has no OAuth."""

    @extend_schema(exclude=True)  # a page, not an operation of the API (as drf-spectacular's own)
    def get(self, request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        response = super().get(request, *args, **kwargs)
        response["Cross-Origin-Opener-Policy"] = "same-origin"
        return response


urlpatterns = [
    path("schema/", SchemaApi.as_view(), name="schema"),
    # Their own Content-Security-Policy: both start with an inline script (core/csp.py).
    path("docs/", policy_of(SpectacularRedocView.as_view(url_name="schema"), REDOC_POLICY), name="redoc"),
    path("docs/swagger/", policy_of(SwaggerView.as_view(url_name="schema"), SWAGGER_POLICY),
         name="swagger-ui"),
]
