"""The broker's queues as operators see them: how many messages wait in each (not those a
worker holds), read through kombu, so Redis, RabbitMQ and the embedded broker all answer."""
from __future__ import annotations

import logging
from collections.abc import Iterable

from kombu.exceptions import ChannelError

from core.celery import app, broker_connection_ensure
from core.concurrency import turn_released

logger = logging.getLogger(__name__)


def queue_depths(names: Iterable[str]) -> dict[str, int | None]:
    """Messages waiting in each queue; None for every queue when the broker does not answer.
    A queue the broker does not know yet (never used, or emptied on Redis) has none."""
    names = list(names)
    depths: dict[str, int | None] = {}
    try:
        # Without the request's turn while the broker answers (core/health.py says why).
        with turn_released(), app.connection_for_read() as connection:
            broker_connection_ensure(connection)
            channel = connection.default_channel
            for name in names:
                try:
                    depths[name] = channel.queue_declare(queue=name, passive=True).message_count
                except ChannelError:
                    depths[name] = 0
    except Exception:  # the transport's client raises many types; every one means "no answer"
        logger.warning("Could not read the queues' depths from the broker", exc_info=True)
        return dict.fromkeys(names)
    return depths
