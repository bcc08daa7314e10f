"""Project core: settings, the Celery app, root URLs and cross-cutting pieces."""
from core.celery import app as celery_app

__all__ = ("celery_app",)
