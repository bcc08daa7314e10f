"""Routes for the signing secret (included under `api/`)."""
from django.urls import path

from webhooks import api

urlpatterns = [
    path("webhook-secret/", api.SigningSecretApi.as_view(), name="webhook-secret"),
    path("webhook-secret/rotate/", api.SigningSecretRotateApi.as_view(), name="webhook-secret-rotate"),
]
