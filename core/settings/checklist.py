"""The model provider the checklist job calls (OpenAI or any OpenAI-compatible server)."""
from __future__ import annotations

from core.settings.base import env

# API key for the model provider; the checklist job is unavailable without it (or a base URL).
OPENAI_API_KEY = env("OPENAI_API_KEY", default="")
# Any OpenAI-compatible server (a gateway, a self-hosted model); empty means OpenAI itself.
OPENAI_BASE_URL = env("OPENAI_BASE_URL", default="")
# Model used for both checklist steps.
OPENAI_MODEL = env("OPENAI_MODEL", default="gpt-4o-mini")
# Timeout for one model request, in seconds: its whole answer must be in by then (a read begun
# just before may wait as long again).
OPENAI_TIMEOUT_SECONDS = env.float("OPENAI_TIMEOUT_SECONDS", default=60.0, above=0)
# Tries per model call, the first included, before a transient error (429, 5xx, timeout) fails the job.
OPENAI_MAX_ATTEMPTS = env.int("OPENAI_MAX_ATTEMPTS", default=4, minimum=1)
# First wait before retrying a model call, in seconds; it doubles each retry, with jitter.
OPENAI_RETRY_BASE_SECONDS = env.float("OPENAI_RETRY_BASE_SECONDS", default=1.0, minimum=0)
# Longest wait between two tries, in seconds; a longer Retry-After is clamped to it.
OPENAI_RETRY_MAX_SECONDS = env.float("OPENAI_RETRY_MAX_SECONDS", default=20.0, minimum=0)

# Most tokens one model answer may have (sent as `max_completion_tokens`; 0: not sent, the
# model's own limit applies). A longer answer is cut off by the provider and fails the job
# `model_output_too_long`. 16,384 is gpt-4o-mini's own most, and holds a checklist of 500 tasks
# of about 100 characters.
OPENAI_MAX_OUTPUT_TOKENS = env.int("OPENAI_MAX_OUTPUT_TOKENS", default=16_384, minimum=0)

# Tokens (the provider's `usage.total_tokens`) one client's jobs may spend on model calls per
# UTC day; past it, checklist submissions get 429 and its running ones fail (0: no budget).
MODEL_TOKENS_PER_CLIENT_PER_DAY = env.int("MODEL_TOKENS_PER_CLIENT_PER_DAY", default=2_000_000, minimum=0)

# The model provider's circuit breaker, shared by the workers through Redis: after this many
# tries in a row failed as the provider failing (timeouts, lost connections, 5xx), checklist
# model calls fail at once, unsent (`model_provider_unavailable`), for the cool-down; then one
# call tries the provider again (0: no breaker).
OPENAI_BREAKER_FAILURES = env.int("OPENAI_BREAKER_FAILURES", default=5, minimum=0)
# Seconds within which those failures must come, counted from the first of them.
OPENAI_BREAKER_WINDOW_SECONDS = env.int("OPENAI_BREAKER_WINDOW_SECONDS", default=120, minimum=1)
# Seconds the breaker stays open before one call tries the provider again.
OPENAI_BREAKER_COOLDOWN_SECONDS = env.int("OPENAI_BREAKER_COOLDOWN_SECONDS", default=30, minimum=1)
