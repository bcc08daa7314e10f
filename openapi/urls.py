"""The OpenAPI schema and the docs pages that render it (assets served locally)."""
from django.urls import path
from drf_spectacular.views import SpectacularRedocView, SpectacularSwaggerView

# Registers the schema extensions that annotate the API's views from outside them.
import openapi.extensions  # noqa: F401
from core.csp import REDOC_POLICY, SWAGGER_POLICY, policy_of
from openapi.views import SchemaApi

urlpatterns = [
    path("schema/", SchemaApi.as_view(), name="schema"),
    # Their own Content-Security-Policy: both start with an inline script (core/csp.py).
    path("docs/", policy_of(SpectacularRedocView.as_view(url_name="schema"), REDOC_POLICY), name="redoc"),
    path("docs/swagger/", policy_of(SpectacularSwaggerView.as_view(url_name="schema"), SWAGGER_POLICY),
         name="swagger-ui"),
]
