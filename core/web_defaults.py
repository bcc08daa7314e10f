"""The API server's thread count by default, read by the three that start or size it apart:
gunicorn.conf.py (by this file's path: gunicorn's master must not import `core`, whose
__init__ loads the Celery app), scripts/web (the line below, with sed, before gunicorn starts)
and the settings (API_MAX_WAITERS_PER_PROCESS's default). Each wrote its own 256 before: one
changed alone, the script checked connections against one count, gunicorn ran another, and the
settings left room for waits from a third. It imports nothing, and keeps the line as
`WEB_THREADS_DEFAULT = <digits>` for the script (tests/deploy/test_web_defaults.py checks all
three agree). The most processes (WEB_PROCESSES_MAX) is gunicorn.conf.py's and scripts/web's
alike: the script refuses a WEB_CONCURRENCY past it, and gunicorn's default (cores + 1) stops
at it, where on a machine of 64 cores or more it ran past the most the script allows."""

WEB_THREADS_DEFAULT = 256
# Each process keeps up to WEB_ACTIVE_REQUESTS + 8 PostgreSQL connections and ~120 MB (scripts/web).
WEB_PROCESSES_MAX = 64
