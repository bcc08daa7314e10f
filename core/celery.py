"""The Celery application; its configuration is the `CELERY_` namespace of the Django settings."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")

app = Celery("jobapi")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
