"""The OpenAPI schema and the docs pages that render it (assets served locally)."""
from django.urls import path
from drf_spectacular.views import SpectacularRedocView, SpectacularSwaggerView

# Registers the schema extensions that annotate the API's views from outside them.
import openapi.extensions  # noqa: F401
from openapi.views import SchemaApi

urlpatterns = [
    path("schema/", SchemaApi.as_view(), name="schema"),
    path("docs/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("docs/swagger/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
]
