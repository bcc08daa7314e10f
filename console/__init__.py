"""The operators' console (/console/), the figures /metrics reads from the database, and the
Celery workers' heartbeats: what an operator reads to see what is stuck, what failed and which
receiver is down."""
