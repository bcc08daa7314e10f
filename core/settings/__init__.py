"""Django settings, read from the environment (and `.env`) through one django-environ reader
(`core.settings.base.env`), one module per topic.

With no `DATABASE_URL`/`POSTGRES_HOST` and no `CELERY_BROKER_URL` the service runs on embedded
defaults (SQLite and kombu's filesystem transport) for trying it out; production sets both.
"""
from core.settings.api import *  # noqa: F403
from core.settings.base import *  # noqa: F403
from core.settings.checklist import *  # noqa: F403
from core.settings.webhooks import *  # noqa: F403
from core.settings.workers import *  # noqa: F403
from core.settings.observability import *  # noqa: F403
