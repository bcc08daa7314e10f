"""The event types webhooks carry: those a job hands over, and webhooks' own about endpoints."""
from __future__ import annotations

# What a job's transitions record (jobs/transitions.py); the final three end a job.
JOB_EVENT_TYPES = ("job.started", "job.progress", "job.succeeded", "job.failed", "job.canceled")
FINAL_JOB_EVENT_TYPES = ("job.succeeded", "job.failed", "job.canceled")
# webhooks' own: a test an endpoint's owner sends it, and an endpoint disabled for failing.
TEST_EVENT_TYPE = "webhook.test"
ENDPOINT_DISABLED_EVENT_TYPE = "endpoint.disabled"
# What an endpoint may subscribe to, and what it gets when it names none.
ENDPOINT_EVENT_TYPES = (*JOB_EVENT_TYPES, TEST_EVENT_TYPE, ENDPOINT_DISABLED_EVENT_TYPE)
DEFAULT_ENDPOINT_EVENT_TYPES = FINAL_JOB_EVENT_TYPES
