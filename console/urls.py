"""The console and the metrics endpoint (neither is part of the public API or its spec)."""
from django.urls import path

from console import views

urlpatterns = [
    path("console/", views.console, name="console"),
    path("metrics", views.metrics_view, name="metrics"),
]
