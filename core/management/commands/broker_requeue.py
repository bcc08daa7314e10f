"""`manage.py broker_requeue`: put back in their queues the embedded broker's messages that a
killed worker took and never acknowledged (core.broker.FilesystemChannel).

`make run` runs it before it starts its workers, while none runs; with Redis or RabbitMQ as the
broker it does nothing (the broker hands such a message on itself).
"""
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from core.broker import requeue_unacknowledged

EMBEDDED_TRANSPORT = "core.broker:FilesystemTransport"


class Command(BaseCommand):
    help = "Requeue the embedded broker's messages taken by a worker that was killed (make run, before it starts)."

    def handle(self, *args: Any, **options: Any) -> None:
        if getattr(settings, "CELERY_BROKER_TRANSPORT", None) != EMBEDDED_TRANSPORT:
            return
        folders = settings.CELERY_BROKER_TRANSPORT_OPTIONS
        count = requeue_unacknowledged(
            queue_folder=folders["data_folder_in"], processed_folder=folders["processed_folder"]
        )
        if count:
            self.stdout.write(f"Requeued {count} message(s) a stopped worker had taken and not finished.")
